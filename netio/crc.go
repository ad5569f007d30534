package netio

// CRC32C combination (after zlib's crc32_combine): the CRC of A‖B from
// the CRCs of A and B and B's length, without reading either again. A
// caller that checks a payload's bytes end to end with CRC32C anyway can
// so check the frame's CRC too in the same single pass over the bytes
// (see Client.CallUnverified).

// castagnoliPoly is the reflected Castagnoli polynomial.
const castagnoliPoly = 0x82f63b78

// x2n[k] is x^(2^k) modulo the polynomial.
var x2n = func() (t [32]uint32) {
	p := uint32(1) << 30 // x^1
	t[0] = p
	for k := 1; k < 32; k++ {
		p = multModP(p, p)
		t[k] = p
	}
	return t
}()

// multModP multiplies a and b modulo the polynomial (reflected: bit 31 is x^0).
func multModP(a, b uint32) uint32 {
	m := uint32(1) << 31
	var p uint32
	for {
		if a&m != 0 {
			p ^= b
			if a&(m-1) == 0 {
				return p
			}
		}
		m >>= 1
		if b&1 != 0 {
			b = b>>1 ^ castagnoliPoly
		} else {
			b >>= 1
		}
	}
}

// x2nModP is x^(n·2^k) modulo the polynomial.
func x2nModP(n uint64, k uint) uint32 {
	p := uint32(1) << 31 // x^0
	for n != 0 {
		if n&1 != 0 {
			p = multModP(x2n[k&31], p)
		}
		n >>= 1
		k++
	}
	return p
}

// CombineCRC returns the CRC32C of A‖B given crcA = CRC32C(A), crcB =
// CRC32C(B) and lenB = len(B).
func CombineCRC(crcA, crcB uint32, lenB int) uint32 {
	return multModP(x2nModP(uint64(lenB), 3), crcA) ^ crcB
}
