/* Packing op(A) into MR-row panels and op(B) into NR-column panels (layouts in gemm_internal.h).
 * Portable C: no instruction set is named here. */
#include "gemm_internal.h"

#define PK_T float
#define PK_NAME(x) fc_s##x
#include "pack_tmpl.h"
#undef PK_T
#undef PK_NAME

#define PK_T double
#define PK_NAME(x) fc_d##x
#include "pack_tmpl.h"
#undef PK_T
#undef PK_NAME
