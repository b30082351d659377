/* Library identity and status text. */
#include "flexcore/flexcore.h"

#ifndef FLEXCORE_VERSION_STRING
#error "FLEXCORE_VERSION_STRING must be defined by the build (CMake sets it from project(VERSION))"
#endif

const char* fc_version(void) { return FLEXCORE_VERSION_STRING; }

const char* fc_strerror(int status)
{
    switch (status) {
    case FC_OK:
        return "ok";
    case FC_ERR_NULL:
        return "a required pointer is NULL";
    case FC_ERR_SIZE:
        return "a length or offset is negative or out of range";
    case FC_ERR_OP:
        return "unknown op code";
    case FC_ERR_PROGRAM:
        return "malformed executor program";
    case FC_ERR_CALLBACK:
        return "a host callback reported an error";
    case FC_ERR_NOMEM:
        return "out of memory";
    case FC_ERR_BUSY:
        return "the program is already running";
    case FC_ERR_OVERLAP:
        return "an output buffer overlaps another buffer";
    case FC_ERR_ALIGN:
        return "a pointer is not aligned for its element type";
    case FC_ERR_INDEX:
        return "an index is out of range";
    case FC_ERR_DTYPE:
        return "unknown or unsupported dtype";
    default:
        return "unknown status";
    }
}
