// Kernels that check the emulator itself (test_emulator.py); compiled only into the emulator
// library, never by nvcc.
#include <stdint.h>

// Each thread writes its id to shared memory, then reads its right neighbour's. With the barrier
// the result is (tid + 1) % n everywhere; without it, the emulator's alternating thread order
// makes some thread read before its neighbour wrote.
extern "C" __global__ void fc_cu_selftest_neighbour(int with_barrier, int* out)
{
    __shared__ int slot[256];
    const unsigned t = threadIdx.x, n = blockDim.x;
    slot[t] = -1;
    __syncthreads();
    slot[t] = (int)(t + blockIdx.x * n);
    if (with_barrier) {
        __syncthreads();
    }
    out[blockIdx.x * n + t] = slot[(t + 1) % n];
}

// Thread 0 leaves before the barrier the others wait at.
extern "C" __global__ void fc_cu_selftest_divergent(int* out)
{
    if (threadIdx.x == 0) {
        return;
    }
    __syncthreads();
    out[threadIdx.x] = 1;
}

// Dynamic shared memory starts poisoned (all bits set) in every block.
extern "C" __global__ void fc_cu_selftest_dynamic(int* out)
{
    int* buf = FC_EMU_DYN_SHARED(int);
    out[blockIdx.x * blockDim.x + threadIdx.x] = buf[threadIdx.x];
    buf[threadIdx.x] = 7;
}
