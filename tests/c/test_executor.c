/* The executor's C ABI (flexcore/executor.h) from a C program: a hand-written program runs, a
 * callback is called, malformed programs and bad runs are refused with a status. Exits nonzero when
 * any check fails. Built with FLEXCORE_BUILD_TESTS=ON; run by ctest (also under ASan/UBSan by
 * tests/native/test_embed_c.py). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "flexcore/executor.h"
#include "flexcore/flexcore.h"

static int n_passed = 0;
static int n_failed = 0;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (cond) {                                                                                \
            ++n_passed;                                                                            \
        } else {                                                                                   \
            ++n_failed;                                                                            \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
        }                                                                                          \
    } while (0)

#define COUNT(a) ((int64_t)(sizeof(a) / sizeof((a)[0])))

/* Buffers: 0 x (input, 4 doubles), 1 c (constant, 4 doubles), 2 t (arena), 3 the second half of t
 * (alias), 4 y (output 0), 5 z (output 1, 2 doubles), 6 w (output 2). */
static const int64_t kBuffers[] = {
    FC_BUF_INPUT, 0, 0, 32, FC_BUF_CONST, 0, 0, 32, FC_BUF_ARENA, 0, 0,  32, FC_BUF_ALIAS, 2, 16, 16,
    FC_BUF_OUTPUT, 0, 0, 32, FC_BUF_OUTPUT, 1, 0, 16, FC_BUF_OUTPUT, 2, 0, 32,
};

/* t = x + c; y = exp(t); z = t[2:4]; w = callback(x). */
static const int64_t kCode[] = {
    FC_OPC_BINARY,   2, 1, 6, 0, 0, 1, 2, FC_F64, FC_BINARY_ADD, 1, 4, 1, 1,
    FC_OPC_UNARY,    1, 1, 3, 0, 2, 4, FC_F64, FC_UNARY_EXP, 4,
    FC_OPC_COPY,     1, 1, 1, 0, 3, 5, 16,
    FC_OPC_CALLBACK, 1, 1, 3, 0, 0, 6, 7, 32, 32,
};

static fc_program* g_prog = NULL;
static int g_nested_status = 0;

static int doubler(void* user, int64_t index, void* const* buffers)
{
    const double* x = (const double*)buffers[0];
    double* w = (double*)buffers[1];
    for (int i = 0; i < 4; ++i) {
        w[i] = 2.0 * x[i];
    }
    if (user != NULL) { /* run the program again from inside its own run: refused */
        void* ins[1] = {buffers[0]};
        double y[4], z[2], w2[4];
        void* outs[3] = {y, z, w2};
        g_nested_status = fc_program_run(g_prog, ins, NULL, outs, doubler, NULL);
    }
    return index == 7 ? 0 : 1;
}

static int failing(void* user, int64_t index, void* const* buffers)
{
    (void)user;
    (void)index;
    (void)buffers;
    return 1;
}

static void test_run(void)
{
    const double c[4] = {0.5, -1.0, 2.0, 0.0};
    const void* consts[1] = {c};
    CHECK(fc_program_create(kBuffers, COUNT(kBuffers) / FC_BUFFER_FIELDS, consts, 1, 1, 0, 3, kCode, COUNT(kCode),
                            NULL, 0, &g_prog) == FC_OK);
    if (g_prog == NULL) {
        return;
    }
    int64_t arena = -1;
    CHECK(fc_program_arena_bytes(g_prog, &arena) == FC_OK && arena == 32);

    double x[4] = {1.0, 2.0, 3.0, 4.0};
    double y[4], z[2], w[4];
    void* ins[1] = {x};
    void* outs[3] = {y, z, w};
    CHECK(fc_program_run(g_prog, ins, NULL, outs, doubler, NULL) == FC_OK);
    for (int i = 0; i < 4; ++i) {
        CHECK(fabs(y[i] - exp(x[i] + c[i])) <= 1e-15 * exp(x[i] + c[i]));
        CHECK(w[i] == 2.0 * x[i]);
    }
    CHECK(z[0] == x[2] + c[2] && z[1] == x[3] + c[3]);

    /* A run needs its callback; a failing callback stops the run at its instruction. */
    CHECK(fc_program_run(g_prog, ins, NULL, outs, NULL, NULL) == FC_ERR_NULL);
    CHECK(fc_program_run(g_prog, ins, NULL, outs, failing, NULL) == FC_ERR_CALLBACK);
    int64_t at = -1;
    CHECK(fc_program_failed_instruction(g_prog, &at) == FC_OK && at == 3);
    /* Re-entering the running program is refused; the outer run completes. */
    int user = 1;
    CHECK(fc_program_run(g_prog, ins, NULL, outs, doubler, &user) == FC_OK);
    CHECK(g_nested_status == FC_ERR_BUSY);
    /* An output on top of the input, a misaligned input, a missing pointer. */
    void* same[3] = {x, z, w};
    CHECK(fc_program_run(g_prog, ins, NULL, same, doubler, NULL) == FC_ERR_OVERLAP);
    unsigned char raw[40];
    void* odd[1] = {raw + ((uintptr_t)raw % 8 == 0 ? 1 : 0)};
    CHECK(fc_program_run(g_prog, odd, NULL, outs, doubler, NULL) == FC_ERR_ALIGN);
    void* none[1] = {NULL};
    CHECK(fc_program_run(g_prog, none, NULL, outs, doubler, NULL) == FC_ERR_NULL);
    CHECK(fc_program_destroy(g_prog) == FC_OK);
    g_prog = NULL;
}

static int create(const int64_t* buffers, int64_t n_buffers, const int64_t* code, int64_t code_len)
{
    fc_program* p = NULL;
    const int status = fc_program_create(buffers, n_buffers, NULL, 0, 1, 0, 1, code, code_len, NULL, 0, &p);
    CHECK((status == FC_OK) == (p != NULL)); /* a failed create leaves no program behind */
    fc_program_destroy(p);
    return status;
}

static void test_rejected(void)
{
    const int64_t bufs[] = {FC_BUF_INPUT, 0, 0, 32, FC_BUF_OUTPUT, 0, 0, 32};
    const int64_t copy[] = {FC_OPC_COPY, 1, 1, 1, 0, 0, 1, 32};
    CHECK(create(bufs, 2, copy, COUNT(copy)) == FC_OK);
    const int64_t too_long[] = {FC_OPC_COPY, 1, 1, 1, 0, 0, 1, 33};
    CHECK(create(bufs, 2, too_long, COUNT(too_long)) == FC_ERR_PROGRAM);
    const int64_t into_input[] = {FC_OPC_COPY, 1, 1, 1, 0, 1, 0, 32};
    CHECK(create(bufs, 2, into_input, COUNT(into_input)) == FC_ERR_PROGRAM);
    const int64_t bad_id[] = {FC_OPC_COPY, 1, 1, 1, 0, 0, 2, 32};
    CHECK(create(bufs, 2, bad_id, COUNT(bad_id)) == FC_ERR_PROGRAM);
    const int64_t bad_opcode[] = {FC_OPC_COUNT, 1, 1, 0, 0, 0, 1};
    CHECK(create(bufs, 2, bad_opcode, COUNT(bad_opcode)) == FC_ERR_PROGRAM);
    CHECK(create(bufs, 2, copy, COUNT(copy) - 1) == FC_ERR_PROGRAM); /* truncated */
    const int64_t bad_unary[] = {FC_OPC_UNARY, 1, 1, 3, 0, 0, 1, FC_F64, FC_UNARY_COUNT, 4};
    CHECK(create(bufs, 2, bad_unary, COUNT(bad_unary)) == FC_ERR_OP);
    const int64_t alias_past_end[] = {FC_BUF_INPUT, 0, 0, 32, FC_BUF_ALIAS, 0, 24, 16, FC_BUF_OUTPUT, 0, 0, 32};
    const int64_t copy_alias[] = {FC_OPC_COPY, 1, 1, 1, 0, 1, 2, 8};
    CHECK(create(alias_past_end, 3, copy_alias, COUNT(copy_alias)) == FC_ERR_PROGRAM);
    CHECK(create(NULL, 2, copy, COUNT(copy)) == FC_ERR_NULL);
    CHECK(create(bufs, -1, copy, COUNT(copy)) == FC_ERR_SIZE);
    CHECK(fc_program_destroy(NULL) == FC_OK);
}

int main(void)
{
    test_run();
    test_rejected();
    printf("test_executor: %d checks passed, %d failed\n", n_passed, n_failed);
    return n_failed == 0 ? 0 : 1;
}
