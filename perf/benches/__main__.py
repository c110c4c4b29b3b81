"""``python -m perf.benches OP [options]``: OP's sweep with ``perf/sweep.py``'s options, or
``host_overhead --out DIR``."""

import sys

from perf import sweep
from perf.benches import BENCHES, host_overhead


def main(argv) -> int:
    if not argv or argv[0] not in [*BENCHES, "host_overhead"]:
        print(f"usage: python -m perf.benches {{{','.join([*BENCHES, 'host_overhead'])}}} [options]", file=sys.stderr)
        return 2
    if argv[0] == "host_overhead":
        return host_overhead.main(argv[1:])
    return sweep.main(["--op", *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
