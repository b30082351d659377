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
    default:
        return "unknown status";
    }
}
