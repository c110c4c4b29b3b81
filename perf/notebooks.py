"""Re-executes the notebooks (perf/*.ipynb) in place from the committed results, so that from
unchanged results each file comes out byte for byte the same: no execution timestamps, no
kernel or Python version in the metadata, figures as PNG without the matplotlib version (the
notebooks call ``plots.for_notebook``).

    python -m perf.notebooks [NOTEBOOK ...]   # default: every perf/*.ipynb (make notebooks)
"""

import pathlib
import sys

import nbformat
from nbconvert.preprocessors import ClearMetadataPreprocessor, ExecutePreprocessor

PERF = pathlib.Path(__file__).resolve().parent
KEEP = {("kernelspec",), ("language_info", "name")}  # what Jupyter needs to pick the kernel


def render(path: pathlib.Path) -> None:
    nb = nbformat.read(path, as_version=4)
    ExecutePreprocessor(timeout=600, record_timing=False).preprocess(nb, {"metadata": {"path": str(path.parent)}})
    ClearMetadataPreprocessor(preserve_nb_metadata_mask=KEEP).preprocess(nb, {})
    nbformat.write(nb, path)


def main(argv) -> int:
    for path in [pathlib.Path(p) for p in argv] or sorted(PERF.glob("*.ipynb")):
        render(path)
        print(f"rendered {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
