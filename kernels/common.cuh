// Helpers shared by the CUDA kernels (kernels/*.cu).
//
// Conventions of every kernel here:
//  - `extern "C" __global__ void fc_cu_<name>(...)` with scalar and pointer parameters only, so the
//    driver API (pycuda, cuLaunchKernel) and the CPU emulator (tests/cuda_emu) launch it alike;
//  - shapes, strides and programs are read from device memory (the executor program's immediates,
//    uploaded once when a plan is prepared), never passed as structs;
//  - any 1-D launch shape works for elementwise kernels (grid-stride loops); kernels that reduce
//    in shared memory need a power-of-two block of at most FC_CU_MAX_BLOCK threads;
//  - no warp intrinsics (__shfl*, __ballot*): reductions go through shared memory, so the CPU
//    emulator runs exactly this code;
//  - a bad index does not fault: the kernel writes its instruction tag into *err (the host raises).
#pragma once

#include <math.h>
#include <stdint.h>

#include "flexcore/ew_math.h"
#include "flexcore/flexcore.h"
#include "flexcore/host_device.h"

#define FC_CU_MAX_BLOCK 256

#ifdef __CUDACC__
#define FC_DYN_SHARED(T, name) extern __shared__ T name[]
#else
#define FC_DYN_SHARED(T, name) T* name = FC_EMU_DYN_SHARED(T)
#endif

static __device__ __forceinline__ int64_t fc_cu_index() { return (int64_t)blockIdx.x * blockDim.x + threadIdx.x; }

static __device__ __forceinline__ int64_t fc_cu_stride() { return (int64_t)gridDim.x * blockDim.x; }

// Element offset of row-major index i in a view of nd axes with the given strides.
static __device__ __forceinline__ int64_t fc_cu_offset(int64_t i, int nd, const int64_t* shape, const int64_t* strides)
{
    int64_t off = 0;
    for (int d = nd - 1; d >= 0; --d) {
        const int64_t n = shape[d];
        off += (i % n) * strides[d];
        i /= n;
    }
    return off;
}

static __device__ __forceinline__ void fc_cu_fail(int* err, int tag) { atomicExch(err, tag); }
