/* Portability macros shared by the C kernels (csrc/) and the CUDA kernels (kernels/).
 *
 * FC_HOST_DEVICE marks a function that must compile for both the CPU and the GPU, so one
 * definition of the math serves both and the CPU tests check what the GPU runs. */
#ifndef FLEXCORE_HOST_DEVICE_H
#define FLEXCORE_HOST_DEVICE_H

#ifdef __CUDACC__
#define FC_HOST_DEVICE __host__ __device__
#else
#define FC_HOST_DEVICE
#endif

#endif /* FLEXCORE_HOST_DEVICE_H */
