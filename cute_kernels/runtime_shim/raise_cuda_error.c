/* The one CuTe DSL runtime function an exported kernel object calls that lives only in the
 * DSL's shared runtime: it turns a failed CUDA call into a raised TVM-FFI error. Linked into
 * every ahead-of-time library so that library needs TVM-FFI alone at run time. */
#include <stdint.h>
#include <stdio.h>

#include <tvm/ffi/c_api.h>

/* From the statically linked CUDA runtime; cudaError_t is an int-sized enum. */
const char* cudaGetErrorName(int error);
const char* cudaGetErrorString(int error);

/* The generated caller passes TVMFFIErrorSetRaisedFromCStrParts as the first argument (so the
 * DSL's runtime need not link TVM-FFI); here TVM-FFI is linked, so it is called directly. */
void CuteDSLRT_TVMFFISetRaisedCudaError(void* set_raised_from_parts, int32_t code) {
  (void)set_raised_from_parts;
  char number[16];
  snprintf(number, sizeof number, "%d", (int)code);
  const char* parts[] = {"CUDA error ", number, " (", cudaGetErrorName(code), "): ",
                         cudaGetErrorString(code)};
  TVMFFIErrorSetRaisedFromCStrParts("RuntimeError", parts, (int32_t)(sizeof parts / sizeof *parts));
}
