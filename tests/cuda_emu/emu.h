// CPU emulation of the CUDA kernel language, force-included (g++ -include emu.h) when the REAL
// kernels/*.cu sources are compiled as C++ for the tests. Test code, not a product.
//
// Model: the blocks of a grid run one after another; the threads of a block are fibers (ucontext)
// on one OS thread, switched only at __syncthreads(), which is a real barrier: every thread of the
// block must reach it (a thread that finishes while others wait is reported as a divergent
// barrier). Between barriers the threads run in forward order in even phases and in reverse order
// in odd phases, so a read of another thread's shared-memory write that lacks a barrier sees the
// wrong value in one of the two orders.
//
// What it cannot check: timing and occupancy, memory coalescing and bank conflicts, races between
// blocks (blocks never overlap here), races within a phase that happen to be benign in both
// orders, warp-synchronous behaviour (the kernels use no warp intrinsics: __shfl*/__ballot* are
// deliberately not defined, so using one fails to compile here), the memory model (no caching or
// reordering), and device limits (registers, shared-memory size, 1024 threads per block are
// checked; nothing else). Math runs with the host's libm, not CUDA's, so results may differ from
// a GPU in the last ulp for transcendental functions.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>

struct uint3 {
    unsigned x, y, z;
};

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace emu {
struct State {
    uint3 thread_idx;
    uint3 block_idx;
    dim3 block_dim;
    dim3 grid_dim;
    unsigned char* dyn_shared;
};
extern State state;
void syncthreads();
}  // namespace emu

#define threadIdx (emu::state.thread_idx)
#define blockIdx (emu::state.block_idx)
#define blockDim (emu::state.block_dim)
#define gridDim (emu::state.grid_dim)

// __global__ must leave a mark the generator finds after preprocessing (gen.py).
#define __global__ __attribute__((used))
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
// One copy per kernel (per template instance), shared by the threads of the running block:
// blocks run one at a time. Not poisoned between blocks: a kernel that reads shared memory
// before writing it may pass here.
#define __shared__ static
#define __syncthreads() emu::syncthreads()
#define __trap() __builtin_trap()

// Dynamic shared memory (launch argument): FC_DYN_SHARED in kernels/common.cuh reads this.
#define FC_EMU_DYN_SHARED(T) (reinterpret_cast<T*>(emu::state.dyn_shared))

// Atomics: fibers switch only at barriers, so a plain read-modify-write is atomic here.
template <typename T>
inline T atomicAdd(T* p, T v)
{
    T old = *p;
    *p = old + v;
    return old;
}
template <typename T>
inline T atomicExch(T* p, T v)
{
    T old = *p;
    *p = v;
    return old;
}
template <typename T>
inline T atomicMax(T* p, T v)
{
    T old = *p;
    *p = old > v ? old : v;
    return old;
}
template <typename T>
inline T atomicCAS(T* p, T cmp, T v)
{
    T old = *p;
    if (old == cmp) {
        *p = v;
    }
    return old;
}
