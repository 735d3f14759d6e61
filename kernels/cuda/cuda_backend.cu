/* cuda_backend.cu - device discovery for the CUDA backend (see cuda_backend.h). Linked
 * with the static CUDA runtime, so a binary built here still starts on a machine without
 * a GPU or driver: the runtime then reports cudaErrorNoDevice or
 * cudaErrorInsufficientDriver, which we turn into "0 devices" plus a message. */
#include "cuda_backend.h"

#include <cuda_runtime.h>
#include <stdio.h>

extern "C" int cuda_device_count(char *err, size_t errlen)
{
    int n = 0;
    cudaError_t rc = cudaGetDeviceCount(&n);
    if (rc != cudaSuccess) {
        if (err && errlen) snprintf(err, errlen, "%s", cudaGetErrorString(rc));
        cudaGetLastError(); /* clear the sticky-free error so later calls start clean */
        return 0;
    }
    if (err && errlen) err[0] = '\0';
    return n;
}

extern "C" int cuda_runtime_version(void)
{
    return CUDART_VERSION;
}
