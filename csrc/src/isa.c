/* Runtime instruction-set detection, done once per process (BLIS-style: kernels are chosen at run
 * time, so one binary runs everywhere, and FLEXCORE_ISA forces a lower path for testing). */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "flexcore/flexcore.h"

enum { ISA_SCALAR = 0, ISA_AVX2 = 1, ISA_AVX512 = 2, ISA_COUNT = 3 };

static const char* const isa_names[ISA_COUNT] = {"scalar", "avx2", "avx512"};

/* The best level this CPU and OS support. GCC's and Clang's __builtin_cpu_supports check the
 * XCR0 register too, so a feature the OS does not save across context switches reads as absent.
 * The avx512 level is the Skylake-X set (F, BW, VL, DQ); avx2 includes FMA (Haswell). */
static int cpu_level(void)
{
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) {
        return ISA_AVX512;
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        return ISA_AVX2;
    }
#endif
    return ISA_SCALAR;
}

/* The level named by FLEXCORE_ISA, or -1 when it is unset or names no level. */
static int requested_level(void)
{
    const char* requested = getenv("FLEXCORE_ISA");
    if (requested == NULL) {
        return -1;
    }
    for (int level = 0; level < ISA_COUNT; ++level) {
        if (strcmp(requested, isa_names[level]) == 0) {
            return level;
        }
    }
    return -1;
}

const char* fc_cpu_isa(void)
{
    /* Racing first calls compute the same value, so a relaxed atomic is all the "once" needed. */
    static atomic_int cached = -1;
    int level = atomic_load_explicit(&cached, memory_order_relaxed);
    if (level < 0) {
        const int cpu = cpu_level();
        const int requested = requested_level();
        level = (requested >= 0 && requested < cpu) ? requested : cpu;
        atomic_store_explicit(&cached, level, memory_order_relaxed);
    }
    return isa_names[level];
}
