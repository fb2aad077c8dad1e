#include "textflag.h"

// func prefetch(addrs *[prefetchMax]uintptr, n int)
TEXT ·prefetch(SB), NOSPLIT|NOFRAME, $0-16
	MOVQ addrs+0(FP), SI
	MOVQ n+8(FP), CX
	TESTQ CX, CX
	JLE done
loop:
	MOVQ (SI), AX
	PREFETCHT0 (AX)
	ADDQ $8, SI
	DECQ CX
	JNZ loop
done:
	RET
