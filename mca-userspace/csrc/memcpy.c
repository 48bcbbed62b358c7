/*
 * memcpy and memmove for MCA's static musl build (x86-64).
 *
 * musl's memcpy aligns the destination and then runs `rep movsq` for every length. Most of a
 * proxy's copies are short (a header name, a log field, a future moved into its box), and for
 * those the string instruction's start-up cost dominates: proxying a GET spent 20% of its CPU
 * time in musl's memcpy against 6% in glibc's, and with this one 21-23 µs of CPU instead of
 * 31-34 (docs/benchmarks.md). It does what glibc's does in spirit: copies of up to 256 bytes
 * are unaligned loads and stores, longer ones `rep movsb`, which CPUs with ERMS (every x86-64
 * server CPU since 2013) run at full speed.
 *
 * It is also musl's `__memcpy_fwd`, which musl's memmove calls when a forward copy is safe
 * (the destination below the source, or no overlap), so musl's own memcpy object is never
 * linked: every path here is safe then, reading what a write could overwrite before writing.
 * No `restrict`, so that the compiler does not move a read after a write either.
 *
 * musl's memmove copies backward with `std; rep movsb`, which CPUs run a byte at a time, and
 * takes that path for a destination equal to its source too: rustls's record buffer compacts
 * itself with such a no-op move after every read, and reading the API server's TLS records
 * spent 8% of a 100 KB POST's CPU samples there (docs/benchmarks.md). `mca_memmove` returns
 * at once when there is nothing to move and copies backward 16 bytes at a time.
 *
 * Outside the musl build both are compiled under their `mca_` names alone, for the unit tests
 * (src/memcpy.rs).
 */
#include <stddef.h>
#include <stdint.h>

typedef uint64_t u64 __attribute__((aligned(1), may_alias));
typedef uint32_t u32 __attribute__((aligned(1), may_alias));
typedef uint16_t u16 __attribute__((aligned(1), may_alias));
typedef long long v16 __attribute__((vector_size(16), aligned(1), may_alias));

/* Up to 32 bytes everything is read before anything is written, which mca_memmove relies on. */
void *mca_memcpy(void *dst, const void *src, size_t n)
{
	unsigned char *d = dst;
	const unsigned char *s = src;
	if (n <= 16) {
		if (n >= 8) {
			uint64_t head = *(const u64 *)s, tail = *(const u64 *)(s + n - 8);
			*(u64 *)d = head;
			*(u64 *)(d + n - 8) = tail;
		} else if (n >= 4) {
			uint32_t head = *(const u32 *)s, tail = *(const u32 *)(s + n - 4);
			*(u32 *)d = head;
			*(u32 *)(d + n - 4) = tail;
		} else if (n >= 2) {
			uint16_t head = *(const u16 *)s, tail = *(const u16 *)(s + n - 2);
			*(u16 *)d = head;
			*(u16 *)(d + n - 2) = tail;
		} else if (n == 1) {
			*d = *s;
		}
		return dst;
	}
	if (n <= 32) {
		v16 head = *(const v16 *)s, tail = *(const v16 *)(s + n - 16);
		*(v16 *)d = head;
		*(v16 *)(d + n - 16) = tail;
		return dst;
	}
	if (n <= 256) {
		/* Forward, 16 bytes at a time; the last 16 read first, since a forward copy onto
		 * a source above the destination may overwrite them before they are reached. */
		v16 tail = *(const v16 *)(s + n - 16);
		for (size_t i = 0; i < n - 16; i += 16)
			*(v16 *)(d + i) = *(const v16 *)(s + i);
		*(v16 *)(d + n - 16) = tail;
		return dst;
	}
	__asm__ volatile("rep movsb" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
	return dst;
}

void *mca_memmove(void *dst, const void *src, size_t n)
{
	unsigned char *d = dst;
	const unsigned char *s = src;
	/* Forward is safe unless the destination starts inside the source. */
	if ((uintptr_t)d - (uintptr_t)s >= n)
		return mca_memcpy(dst, src, n);
	if (d == s)
		return dst;
	if (n <= 32)
		return mca_memcpy(dst, src, n);
	/* The destination lies above the source: from the end down, 16 bytes at a time. The first
	 * 16 are read before anything is written, and each block is read before the one below it
	 * is written, which is all a write could overwrite. */
	v16 head = *(const v16 *)s;
	size_t i = n;
	while (i > 16) {
		i -= 16;
		*(v16 *)(d + i) = *(const v16 *)(s + i);
	}
	*(v16 *)d = head;
	return dst;
}

#ifdef MCA_REPLACE_MUSL
void *memcpy(void *dst, const void *src, size_t n)
	__attribute__((alias("mca_memcpy")));
void *__memcpy_fwd(void *dst, const void *src, size_t n) __attribute__((alias("mca_memcpy")));
void *memmove(void *dst, const void *src, size_t n) __attribute__((alias("mca_memmove")));
#endif
