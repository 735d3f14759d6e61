/* cuda_backend.h - host API of the CUDA backend (the .cu files here, built by nvcc into
 * build/libcitadel_cuda.a only when nvcc is on PATH; the Makefile then defines
 * CITADEL_CUDA for the code that calls it). Plain C: every CUDA error becomes a message
 * in the caller's buffer and a negative return, never a crash. So far only device
 * discovery exists; the device kernels of issue 8 are not written yet. */
#ifndef CITADEL_CUDA_BACKEND_H
#define CITADEL_CUDA_BACKEND_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Number of CUDA devices visible now (0 on a machine with no GPU or no driver; err
 * then says why when the runtime reported an error). Never fails hard. */
int cuda_device_count(char *err, size_t errlen);

/* CUDA runtime version the backend was compiled against, as major*1000 + minor*10. */
int cuda_runtime_version(void);

#ifdef __cplusplus
}
#endif

#endif
