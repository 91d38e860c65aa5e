/*
 * One SIMD SHA-1 "lanes" function for rpj_tasks/native/_speedups.c, which includes this file once per
 * instruction set after defining:
 *
 *   LANES_N       lanes per vector (4, 8 or 16 uint32)
 *   LANES_FN      the function's name
 *   LANES_VEC     a name for the vector type
 *   LANES_TARGET  (optional) the GCC target, e.g. "avx2"
 *
 * LANES_FN(msgs, lens, n, out): out[j] = LE uint32 of SHA-1(msgs[j][0:lens[j]])[:4] for j < n <= LANES_N.
 * The FIPS 180-4 rounds run on vectors of LANES_N independent states; a lane whose message has
 * fewer blocks than the longest keeps its state (masked update).
 */
typedef uint32_t LANES_VEC __attribute__((vector_size(4 * LANES_N)));

#ifdef LANES_TARGET
__attribute__((target(LANES_TARGET)))
#endif
static void
LANES_FN(const unsigned char *const *msgs, const size_t *lens, int n, uint32_t *out)
{
    LANES_VEC h0, h1, h2, h3, h4;
    size_t most = 0;
    size_t blocks[LANES_N];
    for (int j = 0; j < LANES_N; j++) {
        h0[j] = 0x67452301u;
        h1[j] = 0xEFCDAB89u;
        h2[j] = 0x98BADCFEu;
        h3[j] = 0x10325476u;
        h4[j] = 0xC3D2E1F0u;
        blocks[j] = j < n ? sha1_blocks(lens[j]) : 0;
        most = blocks[j] > most ? blocks[j] : most;
    }
    unsigned char block[64];
    for (size_t t = 0; t < most; t++) {
        LANES_VEC w[80];
        LANES_VEC live;
        for (int j = 0; j < LANES_N; j++) {
            live[j] = t < blocks[j] ? 0xFFFFFFFFu : 0;
            const unsigned char *p = block;
            if (t >= blocks[j])
                memset(block, 0, 64);
            else if ((t + 1) * 64 <= lens[j])
                p = msgs[j] + t * 64;
            else
                sha1_padded_block(msgs[j], lens[j], t, block);
            for (int i = 0; i < 16; i++)
                w[i][j] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 |
                          p[4 * i + 3];
        }
        for (int i = 16; i < 80; i++)
            w[i] = VROTL(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
        LANES_VEC a = h0, b = h1, c = h2, d = h3, e = h4;
#define SHA1_ROUND(F, K)                                          \
    do {                                                          \
        const LANES_VEC tmp = VROTL(a, 5) + (F) + e + (K) + w[i]; \
        e = d;                                                    \
        d = c;                                                    \
        c = VROTL(b, 30);                                         \
        b = a;                                                    \
        a = tmp;                                                  \
    } while (0)
        int i = 0;
        for (; i < 20; i++)
            SHA1_ROUND((b & c) | (~b & d), 0x5A827999u);
        for (; i < 40; i++)
            SHA1_ROUND(b ^ c ^ d, 0x6ED9EBA1u);
        for (; i < 60; i++)
            SHA1_ROUND((b & c) | (b & d) | (c & d), 0x8F1BBCDCu);
        for (; i < 80; i++)
            SHA1_ROUND(b ^ c ^ d, 0xCA62C1D6u);
#undef SHA1_ROUND
        h0 += a & live;
        h1 += b & live;
        h2 += c & live;
        h3 += d & live;
        h4 += e & live;
    }
    for (int j = 0; j < n; j++)
        out[j] = bswap32(h0[j]);
}

#undef LANES_N
#undef LANES_FN
#undef LANES_VEC
#undef LANES_TARGET
