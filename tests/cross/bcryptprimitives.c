/*
 * Test infrastructure only, never shipped: Rust's std (1.78+) draws random
 * numbers through ProcessPrng in bcryptprimitives.dll, which Wine 8 lacks.
 * This DLL provides that one function over advapi32's RtlGenRandom
 * (exported as SystemFunction036), so the Windows binaries run under Wine.
 * Built by tests/cross/setup with `zig cc -target x86_64-windows-gnu -shared`.
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG chunk = length > 0x10000000 ? 0x10000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
