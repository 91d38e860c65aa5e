/*
 * rpj_tasks.native._speedups: the inner loops of the annotation stage that dominated its profile,
 * written against the CPython C API.  Each function has a pure-Python twin in the package that
 * is the readable definition and the fallback; tests/test_speedups.py checks that both give the
 * same results (spec vectors, every code point, property-based inputs).
 *
 *   word_punct(text)            -> list[str]   RW: stdlib-re matches of \w+|[^\w\s]+
 *   minhash(joined, a, b, k)    -> bytes|None  128 x uint32 MinHash of the k-word shingles
 *   dsir_counts(tokens, out)    -> None        hashed unigram + bigram bucket counts (builtin hash)
 *   repetition(words, max_n)   -> tuple       top / duplicate n-gram character counts
 *   token_stats(tokens, stop)  -> tuple       stop-word, all-caps and ASCII-letter token counts
 *   line_stats(lines, stable)  -> list        per-line counts of the six line signals
 *   ft_predict(text, ...)      -> tuple       fastText's top-1 prediction for one line of text
 *   ccnet_line_hashes(joined)  -> bytes       CCNet paragraph hashes of lower-cased lines
 *   ccnet_translate(text, mn)  -> str         the table step of CCNet's perplexity normaliser
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* ------------------------------------------------------------------ word_punct */

/* \w of the stdlib re module on str patterns: Py_UNICODE_ISALNUM or '_'; \s: Py_UNICODE_ISSPACE. */
static inline int is_word(Py_UCS4 c) { return c == '_' || Py_UNICODE_ISALNUM(c); }

static PyObject *
word_punct(PyObject *module, PyObject *text)
{
    if (!PyUnicode_Check(text)) {
        PyErr_SetString(PyExc_TypeError, "word_punct() expects a str");
        return NULL;
    }
    if (PyUnicode_READY(text) < 0)
        return NULL;
    const int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    const Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    PyObject *tokens = PyList_New(0);
    if (tokens == NULL)
        return NULL;
    Py_ssize_t i = 0;
    while (i < n) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (Py_UNICODE_ISSPACE(c)) {
            i++;
            continue;
        }
        const Py_ssize_t start = i++;
        if (is_word(c)) {
            while (i < n && is_word(PyUnicode_READ(kind, data, i)))
                i++;
        } else {
            while (i < n) {
                c = PyUnicode_READ(kind, data, i);
                if (is_word(c) || Py_UNICODE_ISSPACE(c))
                    break;
                i++;
            }
        }
        PyObject *token = PyUnicode_Substring(text, start, i);
        if (token == NULL || PyList_Append(tokens, token) < 0) {
            Py_XDECREF(token);
            Py_DECREF(tokens);
            return NULL;
        }
        Py_DECREF(token);
    }
    return tokens;
}

/* ------------------------------------------------------------------ SHA-1 (FIPS 180-4) */

/* Only the first 32 bits of the digest (H0 after the last block) are needed. */

static inline uint32_t rotl32(uint32_t x, int r) { return (x << r) | (x >> (32 - r)); }

static void
sha1_block(uint32_t h[5], const unsigned char *p)
{
    uint32_t w[80];
    for (int t = 0; t < 16; t++)
        w[t] = (uint32_t)p[4 * t] << 24 | (uint32_t)p[4 * t + 1] << 16 | (uint32_t)p[4 * t + 2] << 8 | p[4 * t + 3];
    for (int t = 16; t < 80; t++)
        w[t] = rotl32(w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16], 1);
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int t = 0; t < 80; t++) {
        uint32_t f, k;
        if (t < 20) {
            f = (b & c) | (~b & d);
            k = 0x5A827999u;
        } else if (t < 40) {
            f = b ^ c ^ d;
            k = 0x6ED9EBA1u;
        } else if (t < 60) {
            f = (b & c) | (b & d) | (c & d);
            k = 0x8F1BBCDCu;
        } else {
            f = b ^ c ^ d;
            k = 0xCA62C1D6u;
        }
        const uint32_t tmp = rotl32(a, 5) + f + e + k + w[t];
        e = d;
        d = c;
        c = rotl32(b, 30);
        b = a;
        a = tmp;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
}

/* Block `t` of the SHA-1 padding of msg[0:len] (0x80, zeros, 64-bit big-endian bit length). */
static void
sha1_padded_block(const unsigned char *msg, size_t len, size_t t, unsigned char out[64])
{
    const size_t from = t * 64;
    if (from + 64 <= len) {
        memcpy(out, msg + from, 64);
        return;
    }
    memset(out, 0, 64);
    if (from < len)
        memcpy(out, msg + from, len - from);
    if (from <= len)
        out[len - from] = 0x80;
    if (len + 9 <= from + 64) { /* the last block carries the length */
        const uint64_t bits = (uint64_t)len * 8;
        for (int i = 0; i < 8; i++)
            out[63 - i] = (unsigned char)(bits >> (8 * i));
    }
}

static inline size_t sha1_blocks(size_t len) { return (len + 8) / 64 + 1; }

static inline uint32_t bswap32(uint32_t x)
{
    return (x >> 24) | ((x >> 8) & 0xFF00u) | ((x << 8) & 0xFF0000u) | (x << 24);
}

/* SHA-1 of msg[0:len] into the state h[5] (the digest is h[0..4], each big-endian). */
static void
sha1_state(const unsigned char *msg, size_t len, uint32_t h[5])
{
    h[0] = 0x67452301u;
    h[1] = 0xEFCDAB89u;
    h[2] = 0x98BADCFEu;
    h[3] = 0x10325476u;
    h[4] = 0xC3D2E1F0u;
    unsigned char block[64];
    const size_t blocks = sha1_blocks(len);
    for (size_t t = 0; t < blocks; t++) {
        if ((t + 1) * 64 <= len) {
            sha1_block(h, msg + t * 64);
        } else {
            sha1_padded_block(msg, len, t, block);
            sha1_block(h, block);
        }
    }
}

/* The little-endian uint32 read of the first 4 digest bytes: byte-swapped H0. */
static uint32_t
sha1_prefix32(const unsigned char *msg, size_t len)
{
    uint32_t h[5];
    sha1_state(msg, len, h);
    return bswap32(h[0]);
}

/*
 * SHA-1 of several messages at once (GCC vector extensions), one function per instruction set, each
 * with as many lanes as its registers hold: a generic vector wider than the registers is split by
 * GCC into pieces that run several times slower than the scalar code.  The widest one the CPU runs
 * is chosen when the module is imported (`simd()` tells which, and switches for tests):
 *
 *   generic  4 lanes  the baseline ISA (SSE2 on x86-64, NEON on aarch64)
 *   avx2     8 lanes  x86 only
 *   avx512f 16 lanes  x86 only (Intel and AMD alike: chosen by feature, not CPU model)
 */
#define SHA1_MAX_LANES 16
#define VROTL(x, r) (((x) << (r)) | ((x) >> (32 - (r))))
typedef void (*sha1_lanes_fn)(const unsigned char *const *msgs, const size_t *lens, int n, uint32_t *out);

#define LANES_N 4
#define LANES_FN sha1_lanes_generic
#define LANES_VEC vu32x4
#include "_sha1_lanes.h"

#if defined(__x86_64__) || defined(__i386__)
#define RPJ_X86 1
#define LANES_N 8
#define LANES_FN sha1_lanes_avx2
#define LANES_VEC vu32x8
#define LANES_TARGET "avx2"
#include "_sha1_lanes.h"

#define LANES_N 16
#define LANES_FN sha1_lanes_avx512
#define LANES_VEC vu32x16
#define LANES_TARGET "avx512f"
#include "_sha1_lanes.h"
/* Other loops: a clone per instruction set, picked by CPU feature when the module loads. */
#define RPJ_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define RPJ_CLONES
#endif

static const struct {
    const char *name;
    int lanes;
    sha1_lanes_fn fn;
} SIMD[] = {
    {"generic", 4, sha1_lanes_generic},
#ifdef RPJ_X86
    {"avx2", 8, sha1_lanes_avx2},
    {"avx512f", 16, sha1_lanes_avx512},
#endif
};
#define N_SIMD ((int)(sizeof(SIMD) / sizeof(SIMD[0])))

static int simd_choice = 0; /* index into SIMD */

static int
simd_supported(int i)
{
#ifdef RPJ_X86
    __builtin_cpu_init();
    if (strcmp(SIMD[i].name, "avx2") == 0)
        return __builtin_cpu_supports("avx2");
    if (strcmp(SIMD[i].name, "avx512f") == 0)
        return __builtin_cpu_supports("avx512f");
#endif
    return i == 0;
}

/* sig[j] = min(sig[j], low32(((h * a_j + b_j) mod 2^64) mod (2^61 - 1))) for every hash. */
#define MERSENNE ((uint64_t)0x1FFFFFFFFFFFFFFFull) /* 2^61 - 1 */

RPJ_CLONES
static void
permute_min(const uint32_t *hashes, Py_ssize_t n, const uint64_t *a, const uint64_t *b, Py_ssize_t k,
            uint32_t *sig)
{
    for (Py_ssize_t s = 0; s < n; s++) {
        const uint64_t h = hashes[s];
        for (Py_ssize_t j = 0; j < k; j++) {
            const uint64_t x = h * a[j] + b[j];
            uint64_t y = (x & MERSENNE) + (x >> 61);
            y -= y >= MERSENNE ? MERSENNE : 0;
            const uint32_t v = (uint32_t)y;
            sig[j] = v < sig[j] ? v : sig[j];
        }
    }
}

/* ------------------------------------------------------------------ minhash */

static int
get_u64_table(PyObject *obj, Py_buffer *view, const char *name)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    if (view->len <= 0 || view->len % 8 != 0 || view->len / 8 > 4096) {
        PyErr_Format(PyExc_ValueError, "%s must hold 1..4096 uint64 values", name);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/*
 * minhash(joined: bytes, a: buffer[uint64], b: buffer[uint64], shingle: int) -> bytes | None
 *
 * `joined` is the document's words joined by single spaces (no empty words).  For every shingle of
 * `shingle` consecutive words (its UTF-8 bytes, single spaces inside), h = LE uint32 of SHA-1[:4];
 * value_i = ((h * a_i + b_i) mod 2^64) mod (2^61 - 1), low 32 bits; the signature is the minimum per
 * permutation, as native-endian uint32 bytes.  None if there are fewer than `shingle` words.
 */
static PyObject *
minhash(PyObject *module, PyObject *args)
{
    Py_buffer text, va, vb;
    PyObject *a_obj, *b_obj;
    Py_ssize_t shingle;
    if (!PyArg_ParseTuple(args, "y*OOn", &text, &a_obj, &b_obj, &shingle))
        return NULL;
    PyObject *result = NULL;
    if (get_u64_table(a_obj, &va, "a") < 0) {
        PyBuffer_Release(&text);
        return NULL;
    }
    if (get_u64_table(b_obj, &vb, "b") < 0) {
        PyBuffer_Release(&va);
        PyBuffer_Release(&text);
        return NULL;
    }
    const Py_ssize_t k = va.len / 8;
    if (vb.len != va.len || shingle < 1) {
        PyErr_SetString(PyExc_ValueError, "a and b must have the same length and shingle must be >= 1");
        goto done;
    }
    const unsigned char *s = text.buf;
    const Py_ssize_t len = text.len;
    /* word starts; words = spaces + 1 for non-empty text */
    Py_ssize_t n_words = len ? 1 : 0;
    for (Py_ssize_t i = 0; i < len; i++)
        n_words += s[i] == ' ';
    if (n_words < shingle) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    const Py_ssize_t n_shingles = n_words - shingle + 1;
    Py_ssize_t *starts = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(n_words + 1));
    uint32_t *hashes = PyMem_Malloc(sizeof(uint32_t) * (size_t)n_shingles);
    uint32_t *sig = PyMem_Malloc(sizeof(uint32_t) * (size_t)k);
    if (starts == NULL || hashes == NULL || sig == NULL) {
        PyMem_Free(starts);
        PyMem_Free(hashes);
        PyMem_Free(sig);
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t w = 0;
    starts[w++] = 0;
    for (Py_ssize_t i = 0; i < len; i++)
        if (s[i] == ' ')
            starts[w++] = i + 1;
    starts[w] = len + 1; /* one past the end, as if a space followed the last word */
    for (Py_ssize_t i = 0; i < k; i++)
        sig[i] = UINT32_MAX;
    Py_BEGIN_ALLOW_THREADS
    const int lanes = SIMD[simd_choice].lanes;
    const sha1_lanes_fn sha1_lanes = SIMD[simd_choice].fn;
    for (Py_ssize_t i = 0; i < n_shingles; i += lanes) {
        const int m = n_shingles - i < lanes ? (int)(n_shingles - i) : lanes;
        const unsigned char *msgs[SHA1_MAX_LANES];
        size_t lens[SHA1_MAX_LANES];
        for (int j = 0; j < m; j++) {
            msgs[j] = s + starts[i + j];
            lens[j] = (size_t)(starts[i + j + shingle] - 1 - starts[i + j]);
        }
        sha1_lanes(msgs, lens, m, hashes + i);
    }
    permute_min(hashes, n_shingles, va.buf, vb.buf, k, sig);
    Py_END_ALLOW_THREADS
    result = PyBytes_FromStringAndSize((const char *)sig, (Py_ssize_t)(sizeof(uint32_t) * (size_t)k));
    PyMem_Free(starts);
    PyMem_Free(hashes);
    PyMem_Free(sig);
done:
    PyBuffer_Release(&vb);
    PyBuffer_Release(&va);
    PyBuffer_Release(&text);
    return result;
}

/* sha1_prefix32(data, lanes=False) -> int: the LE uint32 of SHA-1(data)[:4] (scalar or lane path). */
static PyObject *
py_sha1_prefix32(PyObject *module, PyObject *args)
{
    Py_buffer data;
    int lanes = 0;
    if (!PyArg_ParseTuple(args, "y*|p", &data, &lanes))
        return NULL;
    uint32_t h;
    if (lanes) {
        const unsigned char *msgs[1] = {data.buf};
        size_t lens[1] = {(size_t)data.len};
        SIMD[simd_choice].fn(msgs, lens, 1, &h);
    } else {
        h = sha1_prefix32(data.buf, (size_t)data.len);
    }
    PyBuffer_Release(&data);
    return PyLong_FromUnsignedLong(h);
}

/*
 * simd(name=None) -> str: the SHA-1 lane function in use ("generic", "avx2", "avx512f"); with a
 * name, switch to it first (ValueError if unknown or not supported by this CPU).  Not thread-safe:
 * for tests and benchmarks.
 */
static PyObject *
py_simd(PyObject *module, PyObject *args)
{
    const char *name = NULL;
    if (!PyArg_ParseTuple(args, "|z", &name))
        return NULL;
    if (name != NULL) {
        int found = -1;
        for (int i = 0; i < N_SIMD; i++)
            if (strcmp(SIMD[i].name, name) == 0)
                found = i;
        if (found < 0 || !simd_supported(found)) {
            PyErr_Format(PyExc_ValueError, "SIMD variant '%s' is %s", name,
                         found < 0 ? "unknown" : "not supported by this CPU");
            return NULL;
        }
        simd_choice = found;
    }
    return PyUnicode_FromString(SIMD[simd_choice].name);
}

/* ------------------------------------------------------------------ dsir_counts */

/* CPython >= 3.8 tuple hash (xxHash-style lanes), 64-bit Py_uhash_t, for a 2-tuple of hashes. */
#define XXPRIME_1 ((uint64_t)11400714785074694791ull)
#define XXPRIME_2 ((uint64_t)14029467366897019727ull)
#define XXPRIME_5 ((uint64_t)2870177450012600261ull)

static inline uint64_t xx_lane(uint64_t acc, uint64_t lane)
{
    acc += lane * XXPRIME_2;
    acc = (acc << 31) | (acc >> 33);
    return acc * XXPRIME_1;
}

static inline int64_t pair_hash(int64_t h1, int64_t h2)
{
    uint64_t acc = xx_lane(xx_lane(XXPRIME_5, (uint64_t)h1), (uint64_t)h2);
    acc += (uint64_t)2 ^ (XXPRIME_5 ^ 3527539ull);
    return acc == UINT64_MAX ? 1546275796 : (int64_t)acc;
}

static inline Py_ssize_t bucket_of(int64_t h, uint64_t buckets)
{
    const uint64_t magnitude = h < 0 ? (uint64_t)0 - (uint64_t)h : (uint64_t)h; /* abs() in uint64 */
    return (Py_ssize_t)(magnitude % buckets);
}

/*
 * dsir_counts(tokens: list[str], out: writable buffer[int64]) -> None
 *
 * Adds 1 to out[abs(hash(t)) % len(out)] for every token and to out[abs(hash((t, u))) % len(out)]
 * for every adjacent pair, with the interpreter's own str hash (so PYTHONHASHSEED applies) and the
 * tuple hash computed from the two item hashes exactly as CPython's tuplehash does.
 */
static PyObject *
dsir_counts(PyObject *module, PyObject *args)
{
    PyObject *tokens, *out_obj;
    if (!PyArg_ParseTuple(args, "O!O", &PyList_Type, &tokens, &out_obj))
        return NULL;
    Py_buffer out;
    if (PyObject_GetBuffer(out_obj, &out, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0)
        return NULL;
    if (out.len < 8 || out.len % 8 != 0) {
        PyErr_SetString(PyExc_ValueError, "out must be a writable int64 buffer");
        PyBuffer_Release(&out);
        return NULL;
    }
    int64_t *counts = out.buf;
    const uint64_t buckets = (uint64_t)(out.len / 8);
    const Py_ssize_t n = PyList_GET_SIZE(tokens);
    int64_t previous = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *token = PyList_GET_ITEM(tokens, i);
        if (!PyUnicode_CheckExact(token)) {
            PyErr_Format(PyExc_TypeError, "token %zd is not a str", i);
            PyBuffer_Release(&out);
            return NULL;
        }
        const Py_hash_t h = PyObject_Hash(token);
        if (h == -1 && PyErr_Occurred()) {
            PyBuffer_Release(&out);
            return NULL;
        }
        counts[bucket_of(h, buckets)]++;
        if (i > 0)
            counts[bucket_of(pair_hash(previous, h), buckets)]++;
        previous = h;
    }
    PyBuffer_Release(&out);
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ repetition */

/*
 * repetition(words: list[str], max_n: int) -> (total_chars, top, cover)
 *
 * For n = 2..max_n (lists indexed by n, entries 0 and 1 unused): top[n] = characters of the most
 * frequent repeated n-gram times its count (earliest first occurrence among equals), cover[n] =
 * characters of the words covered by any occurrence of a repeated n-gram; both 0 once no n-gram
 * repeats.  "Characters" are Python len() of the words.  The n-grams are chained as in
 * rpj_tasks.annotate.signals.repetition: the n-gram at i is (class of the repeated (n-1)-gram at i, word
 * i+n-1), and only positions whose (n-1)-grams at i and i+1 both repeat are looked at.
 */
typedef struct {
    uint64_t key;   /* (class + 1) << 32 | (id + 1); 0 = empty slot */
    Py_ssize_t count;
} slot_t;

typedef struct {
    PyObject *word; /* borrowed from the list */
    Py_hash_t hash;
    int32_t id;
} word_slot_t;

static Py_ssize_t
table_find(slot_t *table, size_t mask, uint64_t key)
{
    size_t i = (size_t)((key * 0x9E3779B97F4A7C15ull) >> 17) & mask;
    while (table[i].key != 0 && table[i].key != key)
        i = (i + 1) & mask;
    return (Py_ssize_t)i;
}

static PyObject *
repetition(PyObject *module, PyObject *args)
{
    PyObject *words;
    Py_ssize_t max_n;
    if (!PyArg_ParseTuple(args, "O!n", &PyList_Type, &words, &max_n))
        return NULL;
    if (max_n < 2 || max_n > 1000) {
        PyErr_SetString(PyExc_ValueError, "max_n must be in 2..1000");
        return NULL;
    }
    const Py_ssize_t n_words = PyList_GET_SIZE(words);
    PyObject *result = NULL;
    word_slot_t *word_table = NULL;
    int64_t *top = PyMem_Calloc((size_t)max_n + 1, sizeof(int64_t));
    int64_t *cover = PyMem_Calloc((size_t)max_n + 1, sizeof(int64_t));
    int64_t *prefix = PyMem_Malloc(sizeof(int64_t) * (size_t)(n_words + 1));
    int32_t *ids = PyMem_Malloc(sizeof(int32_t) * (size_t)(n_words + 1));
    int32_t *classes = PyMem_Malloc(sizeof(int32_t) * (size_t)(n_words + 1));
    int32_t *next_classes = PyMem_Malloc(sizeof(int32_t) * (size_t)(n_words + 1));
    Py_ssize_t *positions = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(n_words + 1));
    Py_ssize_t *candidates = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(n_words + 1));
    Py_ssize_t *slots = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(n_words + 1));
    size_t capacity = 16;
    while (capacity < 2 * (size_t)n_words + 2)
        capacity <<= 1;
    slot_t *table = PyMem_Malloc(sizeof(slot_t) * capacity);
    Py_ssize_t *id_counts = PyMem_Calloc((size_t)n_words + 1, sizeof(Py_ssize_t));
    if (!top || !cover || !prefix || !ids || !classes || !next_classes || !positions || !candidates || !slots ||
        !table || !id_counts) {
        PyErr_NoMemory();
        goto done;
    }
    const size_t mask = capacity - 1;
    if (n_words > INT32_MAX - 2) {
        PyErr_SetString(PyExc_OverflowError, "too many words");
        goto done;
    }
    /* word ids in order of first occurrence (own hash table over the str hashes) and char prefix sums */
    word_table = PyMem_Calloc(capacity, sizeof(word_slot_t));
    if (word_table == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    int32_t n_ids = 0;
    prefix[0] = 0;
    for (Py_ssize_t i = 0; i < n_words; i++) {
        PyObject *word = PyList_GET_ITEM(words, i);
        if (!PyUnicode_Check(word)) {
            PyErr_Format(PyExc_TypeError, "word %zd is not a str", i);
            goto done;
        }
        if (PyUnicode_READY(word) < 0)
            goto done;
        const Py_hash_t h = PyObject_Hash(word);
        if (h == -1 && PyErr_Occurred())
            goto done;
        size_t at = (size_t)h & mask;
        for (;;) {
            word_slot_t *slot = &word_table[at];
            if (slot->word == NULL) {
                slot->word = word;
                slot->hash = h;
                slot->id = n_ids++;
                break;
            }
            if (slot->hash == h) {
                const int equal = slot->word == word ? 1 : PyObject_RichCompareBool(slot->word, word, Py_EQ);
                if (equal < 0)
                    goto done;
                if (equal)
                    break;
            }
            at = (at + 1) & mask;
        }
        ids[i] = word_table[at].id;
        id_counts[ids[i]]++;
        prefix[i + 1] = prefix[i] + PyUnicode_GET_LENGTH(word);
    }
    /* level 1: a word's class is its id if it occurs twice or more */
    Py_ssize_t n_positions = 0;
    for (Py_ssize_t i = 0; i < n_words; i++) {
        classes[i] = id_counts[ids[i]] > 1 ? ids[i] : -1;
        if (classes[i] >= 0)
            positions[n_positions++] = i;
    }
    classes[n_words] = -1;
    for (Py_ssize_t n = 2; n <= max_n && n_positions > 0; n++) {
        Py_ssize_t n_candidates = 0;
        for (Py_ssize_t p = 0; p < n_positions; p++) {
            const Py_ssize_t i = positions[p];
            if (i + n <= n_words && classes[i + 1] >= 0)
                candidates[n_candidates++] = i;
        }
        memset(table, 0, sizeof(slot_t) * capacity);
        for (Py_ssize_t c = 0; c < n_candidates; c++) {
            const Py_ssize_t i = candidates[c];
            const uint64_t key = ((uint64_t)(classes[i] + 1) << 32) | (uint64_t)(ids[i + n - 1] + 1);
            const Py_ssize_t slot = table_find(table, mask, key);
            table[slot].key = key;
            table[slot].count++;
            slots[c] = slot;
        }
        for (Py_ssize_t i = 0; i <= n_words; i++)
            next_classes[i] = -1;
        n_positions = 0;
        Py_ssize_t best_count = 1, best_start = -1, covered_to = 0;
        int64_t covered = 0;
        for (Py_ssize_t c = 0; c < n_candidates; c++) {
            const Py_ssize_t count = table[slots[c]].count;
            if (count < 2)
                continue;
            const Py_ssize_t i = candidates[c];
            positions[n_positions++] = i;
            next_classes[i] = (int32_t)slots[c];
            if (count > best_count) {
                best_count = count;
                best_start = i;
            }
            const Py_ssize_t start = i > covered_to ? i : covered_to, end = i + n;
            if (end > start) {
                covered += prefix[end] - prefix[start];
                covered_to = end;
            }
        }
        if (n_positions > 0) {
            top[n] = (prefix[best_start + n] - prefix[best_start]) * (int64_t)best_count;
            cover[n] = covered;
        }
        int32_t *swap = classes;
        classes = next_classes;
        next_classes = swap;
    }
    PyObject *top_list = PyList_New(max_n + 1), *cover_list = PyList_New(max_n + 1);
    if (top_list == NULL || cover_list == NULL) {
        Py_XDECREF(top_list);
        Py_XDECREF(cover_list);
        goto done;
    }
    for (Py_ssize_t n = 0; n <= max_n; n++) {
        PyList_SET_ITEM(top_list, n, PyLong_FromLongLong(top[n]));
        PyList_SET_ITEM(cover_list, n, PyLong_FromLongLong(cover[n]));
    }
    result = Py_BuildValue("LNN", (long long)prefix[n_words], top_list, cover_list);
done:
    PyMem_Free(word_table);
    PyMem_Free(top);
    PyMem_Free(cover);
    PyMem_Free(prefix);
    PyMem_Free(ids);
    PyMem_Free(classes);
    PyMem_Free(next_classes);
    PyMem_Free(positions);
    PyMem_Free(candidates);
    PyMem_Free(slots);
    PyMem_Free(table);
    PyMem_Free(id_counts);
    return result;
}

/* ------------------------------------------------------------------ token_stats */

/* str.isupper() of CPython: one char -> Py_UNICODE_ISUPPER; else no lower/title char and >= 1 upper. */
static int
str_isupper(int kind, const void *data, Py_ssize_t n)
{
    if (n == 1)
        return Py_UNICODE_ISUPPER(PyUnicode_READ(kind, data, 0)) != 0;
    int cased = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        const Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (Py_UNICODE_ISLOWER(c) || Py_UNICODE_ISTITLE(c))
            return 0;
        if (!cased && Py_UNICODE_ISUPPER(c))
            cased = 1;
    }
    return cased;
}

/*
 * token_stats(tokens: list[str], stop_words: set | frozenset) -> (in_stop_words, isupper, with_ascii_letter)
 * Counts of the tokens that are members of stop_words, for which str.isupper() is true, and that
 * contain a character of [a-zA-Z].
 */
static PyObject *
token_stats(PyObject *module, PyObject *args)
{
    PyObject *tokens, *stop;
    if (!PyArg_ParseTuple(args, "O!O", &PyList_Type, &tokens, &stop))
        return NULL;
    if (!PyAnySet_Check(stop)) {
        PyErr_SetString(PyExc_TypeError, "stop_words must be a set or frozenset");
        return NULL;
    }
    const int check_stop = PySet_GET_SIZE(stop) > 0;
    Py_ssize_t n_stop = 0, n_upper = 0, n_letter = 0;
    const Py_ssize_t n = PyList_GET_SIZE(tokens);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *token = PyList_GET_ITEM(tokens, i);
        if (!PyUnicode_Check(token)) {
            PyErr_Format(PyExc_TypeError, "token %zd is not a str", i);
            return NULL;
        }
        if (PyUnicode_READY(token) < 0)
            return NULL;
        if (check_stop) {
            const int found = PySet_Contains(stop, token);
            if (found < 0)
                return NULL;
            n_stop += found;
        }
        const int kind = PyUnicode_KIND(token);
        const void *data = PyUnicode_DATA(token);
        const Py_ssize_t len = PyUnicode_GET_LENGTH(token);
        n_upper += len > 0 && str_isupper(kind, data, len);
        for (Py_ssize_t j = 0; j < len; j++) {
            const Py_UCS4 c = PyUnicode_READ(kind, data, j);
            if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
                n_letter++;
                break;
            }
        }
    }
    return Py_BuildValue("nnn", n_stop, n_upper, n_letter);
}

/* ------------------------------------------------------------------ line_stats */

static inline int is_ascii_punct(Py_UCS4 c)
{
    return (c >= '!' && c <= '/') || (c >= ':' && c <= '@') || (c >= '[' && c <= '`') || (c >= '{' && c <= '~');
}

static const Py_UCS4 BULLETS[] = {0x2022, 0x2023, 0x25B6, 0x25C0, 0x25E6, 0x25A0, 0x25A1, 0x25AA, 0x25AB, 0x2013};

/*
 * line_stats(lines: list[str], stable: bytes) -> list[tuple[int, ...]]
 *
 * Per line (terminal, bullet, upper, js, words, numeric, norm_len):
 *   terminal  line.rstrip() ends with . ! ? or U+201D;  bullet  line.lstrip() starts with a bullet
 *   upper     characters c with c.isupper()
 *   js, words, numeric, norm_len   over the normalised line N(line): words equal to "javascript",
 *             len(N.split()), characters with isnumeric(), len(N).
 * N needs lower() and NFD; they are computed here only when every character of the line is ASCII or
 * a BMP code point whose bit is set in `stable` (c.lower() == c and NFD(c) == c, from the running
 * interpreter's tables).  Otherwise the last four are -1 and the caller normalises the line itself.
 */
static PyObject *
line_stats(PyObject *module, PyObject *args)
{
    PyObject *lines;
    Py_buffer stable;
    if (!PyArg_ParseTuple(args, "O!y*", &PyList_Type, &lines, &stable))
        return NULL;
    if (stable.len != 65536 / 8) {
        PyBuffer_Release(&stable);
        PyErr_SetString(PyExc_ValueError, "stable must be a 8192-byte bitmap of the BMP");
        return NULL;
    }
    const unsigned char *bits = stable.buf;
    const Py_ssize_t n = PyList_GET_SIZE(lines);
    PyObject *out = PyList_New(n);
    if (out == NULL) {
        PyBuffer_Release(&stable);
        return NULL;
    }
    static const char JS[] = "javascript";
    for (Py_ssize_t li = 0; li < n; li++) {
        PyObject *line = PyList_GET_ITEM(lines, li);
        if (!PyUnicode_Check(line)) {
            PyErr_Format(PyExc_TypeError, "line %zd is not a str", li);
            goto fail;
        }
        if (PyUnicode_READY(line) < 0)
            goto fail;
        const int kind = PyUnicode_KIND(line);
        const void *data = PyUnicode_DATA(line);
        const Py_ssize_t len = PyUnicode_GET_LENGTH(line);
        Py_ssize_t last = len - 1, first = 0;
        while (last >= 0 && Py_UNICODE_ISSPACE(PyUnicode_READ(kind, data, last)))
            last--;
        while (first < len && Py_UNICODE_ISSPACE(PyUnicode_READ(kind, data, first)))
            first++;
        int terminal = 0, bullet = 0;
        if (last >= 0) {
            const Py_UCS4 c = PyUnicode_READ(kind, data, last);
            terminal = c == '.' || c == '!' || c == '?' || c == 0x201D;
        }
        if (first < len) {
            const Py_UCS4 c = PyUnicode_READ(kind, data, first);
            for (size_t b = 0; b < sizeof(BULLETS) / sizeof(BULLETS[0]); b++)
                bullet |= c == BULLETS[b];
        }
        Py_ssize_t upper = 0, js = 0, words = 0, numeric = 0, chars = 0, word_len = 0, js_match = 0;
        int simple = 1;
        for (Py_ssize_t i = 0; i < len; i++) {
            const Py_UCS4 c = PyUnicode_READ(kind, data, i);
            upper += Py_UNICODE_ISUPPER(c) != 0;
            if (!simple)
                continue;
            if (c >= 128 && (c > 0xFFFF || !(bits[c >> 3] & (1u << (c & 7))))) {
                simple = 0;
                continue;
            }
            if (c < 128 && is_ascii_punct(c))
                continue; /* deleted before lower-casing and splitting */
            if (Py_UNICODE_ISSPACE(c)) {
                if (word_len) {
                    js += js_match && word_len == 10;
                    word_len = 0;
                }
                continue;
            }
            if (word_len == 0) {
                words++;
                js_match = 1;
            }
            const Py_UCS4 lower = c >= 'A' && c <= 'Z' ? c + 32 : c;
            js_match = js_match && word_len < 10 && lower == (Py_UCS4)JS[word_len];
            word_len++;
            chars++;
            numeric += Py_UNICODE_ISNUMERIC(c) != 0;
        }
        js += simple && word_len && js_match && word_len == 10;
        PyObject *row = simple ? Py_BuildValue("iinnnnn", terminal, bullet, upper, js, words, numeric,
                                               words ? chars + words - 1 : (Py_ssize_t)0)
                               : Py_BuildValue("iinnnnn", terminal, bullet, upper, (Py_ssize_t)-1, (Py_ssize_t)-1,
                                               (Py_ssize_t)-1, (Py_ssize_t)-1);
        if (row == NULL)
            goto fail;
        PyList_SET_ITEM(out, li, row);
    }
    PyBuffer_Release(&stable);
    return out;
fail:
    Py_DECREF(out);
    PyBuffer_Release(&stable);
    return NULL;
}

/* ------------------------------------------------------------------ ft_predict */

/* The vocabulary of a fastText model as an open-addressing table of word ids (FNV-1a, linear probing)
 * over `blob`, the words' UTF-8 bytes back to back, word i at blob[offsets[i]:offsets[i + 1]]. */
static inline uint32_t fnv1a(const unsigned char *p, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 16777619u;
    }
    return h;
}

typedef struct {
    const unsigned char *blob;
    const int64_t *offsets;
    const int32_t *slots;
    size_t mask;
} vocab_t;

static int32_t
vocab_find(const vocab_t *v, const unsigned char *word, size_t len)
{
    for (size_t i = fnv1a(word, len) & v->mask;; i = (i + 1) & v->mask) {
        const int32_t id = v->slots[i];
        if (id < 0)
            return -1;
        const int64_t from = v->offsets[id], to = v->offsets[id + 1];
        if ((size_t)(to - from) == len && memcmp(v->blob + from, word, len) == 0)
            return id;
    }
}

static int
get_vocab(Py_buffer *blob, Py_buffer *offsets, Py_buffer *slots, vocab_t *v, Py_ssize_t *nwords)
{
    /* `slots` must come from ft_vocab_slots over the same blob and offsets (its ids are not rechecked
     * on every call): rpj_tasks.annotate.signals.classifier.CompiledClassifier keeps the three together. */
    const Py_ssize_t nslots = slots->len / 4;
    *nwords = offsets->len / 8 - 1;
    if (offsets->len % 8 || *nwords < 1 || *nwords > INT32_MAX - 1 || slots->len % 4 || nslots < 2 * *nwords ||
        (nslots & (nslots - 1))) {
        PyErr_SetString(PyExc_ValueError, "vocabulary: offsets must be int64 (words + 1), slots int32, a power of "
                                          "two and at least twice the words");
        return -1;
    }
    v->blob = blob->buf;
    v->offsets = offsets->buf;
    v->slots = slots->buf;
    v->mask = (size_t)nslots - 1;
    if (v->offsets[0] != 0 || v->offsets[*nwords] != blob->len) {
        PyErr_SetString(PyExc_ValueError, "vocabulary: offsets do not span the blob");
        return -1;
    }
    return 0;
}

/* ft_vocab_slots(blob, offsets, nslots) -> bytes: the int32 slot table of the vocabulary (-1 = empty). */
static PyObject *
ft_vocab_slots(PyObject *module, PyObject *args)
{
    Py_buffer blob, offsets;
    Py_ssize_t nslots;
    if (!PyArg_ParseTuple(args, "y*y*n", &blob, &offsets, &nslots))
        return NULL;
    PyObject *result = NULL;
    const Py_ssize_t nwords = offsets.len / 8 - 1;
    if (offsets.len % 8 || nwords < 1 || nwords > INT32_MAX - 1 || nslots < 2 * nwords || (nslots & (nslots - 1))) {
        PyErr_SetString(PyExc_ValueError, "ft_vocab_slots: bad offsets or slot count");
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, nslots * 4);
    if (result == NULL)
        goto done;
    int32_t *slots = (int32_t *)PyBytes_AS_STRING(result);
    memset(slots, 0xFF, (size_t)nslots * 4);
    const int64_t *off = offsets.buf;
    const unsigned char *words = blob.buf;
    const vocab_t v = {words, off, slots, (size_t)nslots - 1};
    for (Py_ssize_t id = 0; id < nwords; id++) {
        if (off[id] < 0 || off[id + 1] < off[id] || off[id + 1] > blob.len) {
            PyErr_SetString(PyExc_ValueError, "ft_vocab_slots: offsets out of order");
            Py_CLEAR(result);
            goto done;
        }
        const size_t len = (size_t)(off[id + 1] - off[id]);
        if (vocab_find(&v, words + off[id], len) >= 0) /* callers pass unique words (CompiledClassifier checks) */
            continue;
        size_t i = fnv1a(words + off[id], len) & v.mask;
        while (slots[i] >= 0)
            i = (i + 1) & v.mask;
        slots[i] = (int32_t)id;
    }
done:
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&blob);
    return result;
}

#define PREFETCH_ROWS 8 /* input rows are scattered over the matrix: ask for them this far ahead */

static inline int ft_is_space(unsigned char c)
{
    return c == ' ' || c == '\n' || c == '\r' || c == '\t' || c == '\v' || c == '\f' || c == '\0';
}

/*
 * ft_predict(text, blob, offsets, slots, wi, wo, dim) -> (label, prob): the top-1 prediction of a
 * plain supervised fastText model (softmax loss, word unigrams, not quantized) for one line of UTF-8
 * `text`, in fastText's own reading and float32 arithmetic (the pinned fasttext-numpy2 build, read
 * off its source and checked against it whenever a model is loaded):
 *
 *   words    split on ' ' \n \r \t \v \f NUL; the rows of the in-vocabulary words, in order, up to
 *            and including a "</s>" token, else followed by the row of "</s>" (the line's end)
 *   hidden_j = (sum of the rows' column j, in order) * (float)(1.0 / rows)
 *   out_i    = sum over j, in order, of wo[i][j] * hidden_j;   out_i = (float)exp((double)(out_i - max))
 *   p_i      = out_i / (sum of out_i, in order)
 *   best     = the last i with the greatest (float)log(p_i + 1e-5);  prob = expf(that log)
 *
 * `wi` and `wo` are float32 C-order matrices of `dim` columns.  The file is compiled with
 * -ffp-contract=off: no multiply-add is fused, as in that build.  "</s>" must be in the vocabulary.
 */
static PyObject *
ft_predict(PyObject *module, PyObject *args)
{
    Py_buffer text, blob, offsets, slots, wi, wo;
    Py_ssize_t dim, nwords;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*y*n", &text, &blob, &offsets, &slots, &wi, &wo, &dim))
        return NULL;
    PyObject *result = NULL;
    float *hidden = NULL, *out = NULL;
    int32_t *ids = NULL;
    vocab_t v;
    if (get_vocab(&blob, &offsets, &slots, &v, &nwords) < 0)
        goto done;
    if (dim <= 0 || wi.len % (4 * dim) || wo.len % (4 * dim) || wo.len == 0 || wi.len / (4 * dim) < nwords) {
        PyErr_SetString(PyExc_ValueError, "ft_predict: wi and wo must be float32 matrices of dim columns, wi with a "
                                          "row per word");
        goto done;
    }
    static const unsigned char EOS[] = "</s>";
    const int32_t eos = vocab_find(&v, EOS, 4);
    if (eos < 0) {
        PyErr_SetString(PyExc_ValueError, "ft_predict: </s> is not in the vocabulary");
        goto done;
    }
    const Py_ssize_t labels = wo.len / (4 * dim);
    hidden = PyMem_Calloc((size_t)dim, sizeof(float));
    out = PyMem_Malloc(sizeof(float) * (size_t)labels);
    ids = PyMem_Malloc(sizeof(int32_t) * (size_t)(text.len / 2 + 2)); /* words <= (bytes + 1) / 2, plus </s> */
    if (hidden == NULL || out == NULL || ids == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    const unsigned char *s = text.buf;
    const Py_ssize_t len = text.len;
    const float *in = wi.buf, *w = wo.buf;
    int best = -1, nan = 0;
    float best_log = 0.0f;
    Py_BEGIN_ALLOW_THREADS
    /* the rows to average, in order: first all of them (ids), then the sums, fetching rows ahead */
    Py_ssize_t rows = 0, i = 0;
    int32_t id = -2; /* -2: the line's end was reached without a "</s>" token */
    while (i < len) {
        while (i < len && ft_is_space(s[i]))
            i++;
        const Py_ssize_t from = i;
        while (i < len && !ft_is_space(s[i]))
            i++;
        if (i == from)
            break;
        id = vocab_find(&v, s + from, (size_t)(i - from));
        if (id >= 0)
            ids[rows++] = id;
        if (id == eos)
            break;
    }
    if (id != eos)
        ids[rows++] = eos;
    const size_t row_bytes = sizeof(float) * (size_t)dim;
    for (Py_ssize_t t = 0; t < rows; t++) {
        if (t + PREFETCH_ROWS < rows) {
            const char *ahead = (const char *)(in + (size_t)ids[t + PREFETCH_ROWS] * (size_t)dim);
            for (size_t b = 0; b < row_bytes; b += 64)
                __builtin_prefetch(ahead + b);
        }
        const float *row = in + (size_t)ids[t] * (size_t)dim;
        for (Py_ssize_t j = 0; j < dim; j++)
            hidden[j] += row[j];
    }
    const float scale = (float)(1.0 / (double)rows);
    for (Py_ssize_t j = 0; j < dim; j++)
        hidden[j] *= scale;
    for (Py_ssize_t k = 0; k < labels; k++) {
        float d = 0.0f;
        const float *row = w + (size_t)k * (size_t)dim;
        for (Py_ssize_t j = 0; j < dim; j++)
            d += row[j] * hidden[j];
        nan |= isnan(d);
        out[k] = d;
    }
    float max = out[0], z = 0.0f;
    for (Py_ssize_t k = 0; k < labels; k++)
        max = max > out[k] ? max : out[k];
    for (Py_ssize_t k = 0; k < labels; k++) {
        out[k] = (float)exp((double)(out[k] - max));
        z += out[k];
    }
    for (Py_ssize_t k = 0; k < labels; k++) {
        out[k] /= z;
        if (out[k] < 0.0f) /* fastText's threshold 0.0 */
            continue;
        const float lg = (float)log((double)out[k] + 1e-5);
        if (best < 0 || !(lg < best_log)) {
            best = (int)k;
            best_log = lg;
        }
    }
    Py_END_ALLOW_THREADS
    if (nan) {
        PyErr_SetString(PyExc_ValueError, "ft_predict: NaN in the output layer (fastText raises EncounteredNaNError)");
        goto done;
    }
    result = Py_BuildValue("(id)", best, (double)expf(best_log));
done:
    PyMem_Free(ids);
    PyMem_Free(hidden);
    PyMem_Free(out);
    PyBuffer_Release(&wo);
    PyBuffer_Release(&wi);
    PyBuffer_Release(&slots);
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&blob);
    PyBuffer_Release(&text);
    return result;
}

/* ------------------------------------------------------------------ module */


/* ------------------------------------------------------------------ ccnet_line_hashes */

/* The 34 special characters of cc_net's normaliser (rpj_tasks/ccnet/normalize.py UNICODE_PUNCT). */
static const Py_UCS4 CCNET_PUNCT[] = {0x00AB, 0x00B4, 0x00BB, 0x2013, 0x2014, 0x2019, 0x201C, 0x201D, 0x201E,
                                      0x2026, 0x2236, 0x2501, 0x25BA, 0x3001, 0x3002, 0x3008, 0x3009, 0x300A,
                                      0x300B, 0x300C, 0x300D, 0x3010, 0x3011, 0xFF01, 0xFF05, 0xFF08, 0xFF09,
                                      0xFF0C, 0xFF0E, 0xFF11, 0xFF1A, 0xFF1B, 0xFF1F, 0xFF5E};

static inline int ccnet_is_punct(Py_UCS4 c)
{
    if (c < 0xAB || (c > 0x25BA && c < 0x3001) || c > 0xFF5E)
        return 0;
    for (size_t i = 0; i < sizeof(CCNET_PUNCT) / sizeof(CCNET_PUNCT[0]); i++)
        if (CCNET_PUNCT[i] == c)
            return 1;
    return 0;
}

/*
 * ccnet_line_hashes(joined) -> bytes: for each '\n'-separated line of `joined` (text already
 * lower-cased with str.lower), the twin of normalize.line_hashes: strip the characters str.strip
 * strips (Py_UNICODE_ISSPACE), map decimal digits (\d of re, category Nd) to '0', delete the control
 * characters (0-31, 127-159) and the 34 special characters, encode as UTF-8 (a lone surrogate as its
 * three bytes, like "surrogatepass"), and store the first 8 bytes of the SHA-1 as a little-endian
 * uint64: 8 bytes per line, in order.  A digit is mapped before the special characters are deleted,
 * so U+FF11 (a digit and a special character) becomes '0'.
 */
static PyObject *
ccnet_line_hashes(PyObject *module, PyObject *arg)
{
    if (!PyUnicode_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "ccnet_line_hashes: a str is required");
        return NULL;
    }
    const int kind = PyUnicode_KIND(arg);
    const void *data = PyUnicode_DATA(arg);
    const Py_ssize_t n = PyUnicode_GET_LENGTH(arg);
    Py_ssize_t lines = 1;
    for (Py_ssize_t i = 0; i < n; i++)
        if (PyUnicode_READ(kind, data, i) == '\n')
            lines++;
    PyObject *result = PyBytes_FromStringAndSize(NULL, 8 * lines);
    unsigned char *buf = PyMem_Malloc((size_t)(4 * n + 1));
    if (result == NULL || buf == NULL) {
        Py_XDECREF(result);
        PyMem_Free(buf);
        return PyErr_NoMemory();
    }
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    Py_ssize_t start = 0;
    for (Py_ssize_t i = 0; i <= n; i++) {
        if (i < n && PyUnicode_READ(kind, data, i) != '\n')
            continue;
        Py_ssize_t s = start, e = i;
        while (s < e && Py_UNICODE_ISSPACE(PyUnicode_READ(kind, data, s)))
            s++;
        while (e > s && Py_UNICODE_ISSPACE(PyUnicode_READ(kind, data, e - 1)))
            e--;
        size_t len = 0;
        for (Py_ssize_t j = s; j < e; j++) {
            Py_UCS4 c = PyUnicode_READ(kind, data, j);
            if (c < 0x80) {
                if (c < 32 || c == 127)
                    continue;
                if (c >= '0' && c <= '9')
                    c = '0';
                buf[len++] = (unsigned char)c;
                continue;
            }
            if (Py_UNICODE_ISDECIMAL(c)) {
                buf[len++] = '0';
                continue;
            }
            if (c < 160 || ccnet_is_punct(c))
                continue;
            if (c < 0x800) {
                buf[len++] = (unsigned char)(0xC0 | (c >> 6));
                buf[len++] = (unsigned char)(0x80 | (c & 0x3F));
            } else if (c < 0x10000) {
                buf[len++] = (unsigned char)(0xE0 | (c >> 12));
                buf[len++] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
                buf[len++] = (unsigned char)(0x80 | (c & 0x3F));
            } else {
                buf[len++] = (unsigned char)(0xF0 | (c >> 18));
                buf[len++] = (unsigned char)(0x80 | ((c >> 12) & 0x3F));
                buf[len++] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
                buf[len++] = (unsigned char)(0x80 | (c & 0x3F));
            }
        }
        uint32_t h[5];
        sha1_state(buf, len, h);
        for (int b = 0; b < 4; b++) {
            out[b] = (unsigned char)(h[0] >> (24 - 8 * b));
            out[4 + b] = (unsigned char)(h[1] >> (24 - 8 * b));
        }
        out += 8;
        start = i + 1;
    }
    PyMem_Free(buf);
    return result;
}

/* cc_net's replacement of each of the 34 special characters, in CCNET_PUNCT's order. */
static const char *const CCNET_PUNCT_REPL[] = {"\"", "'", "\"", "-",  " - ", "'", "\"", "\"", "\"",
                                               "...", ":", "-", "-",  ",",   ".", "<", ">",  "\"",
                                               "\"", "\"", "\"", "[", "]",   "!", "%", "(",  ")",
                                               ",",  ". ", "\"", ":", ";",   "?", "~"};

static inline int ccnet_punct_index(Py_UCS4 c)
{
    if (c < 0xAB || (c > 0x25BA && c < 0x3001) || c > 0xFF5E)
        return -1;
    for (int i = 0; i < (int)(sizeof(CCNET_PUNCT) / sizeof(CCNET_PUNCT[0])); i++)
        if (CCNET_PUNCT[i] == c)
            return i;
    return -1;
}

/*
 * ccnet_translate(text, marks) -> str: the twin of the table step of normalize.ccnet_normalize on a
 * lower-cased NFD text: decimal digits -> '0', control characters (0-31, 127-159) deleted, the 34
 * special characters replaced (CCNET_PUNCT_REPL), combining marks deleted (`marks`: a bitmap of
 * 0x110000 bits, bit cp & 7 of byte cp >> 3 set for category Mn), every other character kept.
 * A digit wins over the other rules (U+FF11 becomes '0').  Returns `text` itself when nothing changes.
 */
static PyObject *
ccnet_translate(PyObject *module, PyObject *args)
{
    PyObject *text;
    Py_buffer marks;
    if (!PyArg_ParseTuple(args, "Uy*", &text, &marks))
        return NULL;
    if (marks.len != 0x110000 / 8) {
        PyBuffer_Release(&marks);
        PyErr_SetString(PyExc_ValueError, "ccnet_translate: marks must be a bitmap of 0x110000 bits");
        return NULL;
    }
    const unsigned char *mn = marks.buf;
    const int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    const Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    Py_ssize_t i = 0;
    for (; i < n; i++) { /* the first character that changes, if any */
        const Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c < 0x80 ? (c < 32 || c == 127 || (c >= '1' && c <= '9'))
                     : (c < 160 || Py_UNICODE_ISDECIMAL(c) || ccnet_punct_index(c) >= 0 || (mn[c >> 3] >> (c & 7) & 1)))
            break;
    }
    if (i == n) {
        PyBuffer_Release(&marks);
        Py_INCREF(text);
        return text;
    }
    Py_UCS4 *out = PyMem_Malloc(sizeof(Py_UCS4) * (size_t)(3 * n + 1));
    if (out == NULL) {
        PyBuffer_Release(&marks);
        return PyErr_NoMemory();
    }
    Py_ssize_t len = 0;
    for (Py_ssize_t j = 0; j < i; j++)
        out[len++] = PyUnicode_READ(kind, data, j);
    for (; i < n; i++) {
        const Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c < 0x80) {
            if (c < 32 || c == 127)
                continue;
            out[len++] = (c >= '0' && c <= '9') ? '0' : c;
            continue;
        }
        if (Py_UNICODE_ISDECIMAL(c)) {
            out[len++] = '0';
            continue;
        }
        if (c < 160)
            continue;
        const int p = ccnet_punct_index(c);
        if (p >= 0) {
            for (const char *r = CCNET_PUNCT_REPL[p]; *r; r++)
                out[len++] = (Py_UCS4)(unsigned char)*r;
            continue;
        }
        if (mn[c >> 3] >> (c & 7) & 1)
            continue;
        out[len++] = c;
    }
    PyBuffer_Release(&marks);
    PyObject *result = PyUnicode_FromKindAndData(PyUnicode_4BYTE_KIND, out, len);
    PyMem_Free(out);
    return result;
}

/* ---- WET: the header fields of a WARC record ---------------------------------------------- */

static int
wet_space(unsigned char c)
{ /* str.isspace() for ASCII: \t \n \v \f \r, \x1c-\x1f and the space */
    return c == ' ' || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f);
}

/* wet_headers(raw) -> {name: value} or None.  For an all-ASCII header block, what
 * rpj_tasks.download.wet._parse_headers_python gives: per line (split at \n) with a non-empty
 * name before its first colon, the name stripped and lower-cased and the value stripped (both
 * as str.strip(), ASCII whitespace), the last of a repeated name winning in the first one's
 * place.  None for a block with a byte >= 0x80: the twin decodes it (U+FFFD, Unicode strip). */
static PyObject *
wet_headers(PyObject *module, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *raw = view.buf;
    const Py_ssize_t n = view.len;
    for (Py_ssize_t i = 0; i < n; i++)
        if (raw[i] >= 0x80) {
            PyBuffer_Release(&view);
            Py_RETURN_NONE;
        }
    PyObject *out = PyDict_New();
    if (out == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    char name[256];
    Py_ssize_t line = 0;
    while (line <= n) {
        const unsigned char *nl = memchr(raw + line, '\n', (size_t)(n - line));
        const Py_ssize_t end = nl ? nl - raw : n;
        const unsigned char *colon = memchr(raw + line, ':', (size_t)(end - line));
        if (colon != NULL && colon > raw + line) {
            Py_ssize_t a = line, b = colon - raw, c = b + 1, d = end;
            while (a < b && wet_space(raw[a]))
                a++;
            while (b > a && wet_space(raw[b - 1]))
                b--;
            while (c < d && wet_space(raw[c]))
                c++;
            while (d > c && wet_space(raw[d - 1]))
                d--;
            PyObject *key, *value;
            if (b - a <= (Py_ssize_t)sizeof(name)) {
                for (Py_ssize_t k = a; k < b; k++)
                    name[k - a] = (char)(raw[k] >= 'A' && raw[k] <= 'Z' ? raw[k] + 32 : raw[k]);
                key = PyUnicode_FromStringAndSize(name, b - a);
            } else {
                PyObject *orig = PyUnicode_FromStringAndSize((const char *)raw + a, b - a);
                key = orig ? PyObject_CallMethod(orig, "lower", NULL) : NULL;
                Py_XDECREF(orig);
            }
            value = key ? PyUnicode_FromStringAndSize((const char *)raw + c, d - c) : NULL;
            if (value == NULL || PyDict_SetItem(out, key, value) < 0) {
                Py_XDECREF(key);
                Py_XDECREF(value);
                Py_DECREF(out);
                PyBuffer_Release(&view);
                return NULL;
            }
            Py_DECREF(key);
            Py_DECREF(value);
        }
        if (nl == NULL)
            break;
        line = end + 1;
    }
    PyBuffer_Release(&view);
    return out;
}

static PyMethodDef methods[] = {
    {"word_punct", word_punct, METH_O, "RW tokens: stdlib-re matches of \\w+|[^\\w\\s]+ in order."},
    {"minhash", minhash, METH_VARARGS, "minhash(joined, a, b, shingle) -> uint32 signature bytes or None."},
    {"sha1_prefix32", py_sha1_prefix32, METH_VARARGS, "LE uint32 of SHA-1(data)[:4]; lanes=True: SIMD path."},
    {"ft_predict", ft_predict, METH_VARARGS, "ft_predict(text, blob, offsets, slots, wi, wo, dim) -> (label, prob)."},
    {"ft_vocab_slots", ft_vocab_slots, METH_VARARGS, "ft_vocab_slots(blob, offsets, nslots) -> int32 slot table."},
    {"simd", py_simd, METH_VARARGS, "simd(name=None) -> the SHA-1 lane variant in use; a name switches to it."},
    {"repetition", repetition, METH_VARARGS, "repetition(words, max_n) -> (total_chars, top, cover)."},
    {"token_stats", token_stats, METH_VARARGS, "token_stats(tokens, stop_words) -> (stop, isupper, ascii letter)."},
    {"line_stats", line_stats, METH_VARARGS, "line_stats(lines, stable_bmp_bitmap) -> per-line counts."},
    {"dsir_counts", dsir_counts, METH_VARARGS, "dsir_counts(tokens, out): add hashed 1-/2-gram counts."},
    {"ccnet_translate", ccnet_translate, METH_VARARGS, "ccnet_translate(nfd_lowered, marks) -> the table step of ccnet_normalize."},
    {"ccnet_line_hashes", ccnet_line_hashes, METH_O, "ccnet_line_hashes(lowered) -> 8-byte LE paragraph hash per line."},
    {"wet_headers", wet_headers, METH_O, "wet_headers(raw) -> {name: value} of an ASCII WARC header block, else None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "rpj_tasks.native._speedups", "Compiled inner loops of the annotation stage.", -1, methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    for (int i = N_SIMD - 1; i > 0; i--)
        if (simd_supported(i)) {
            simd_choice = i;
            break;
        }
    return PyModule_Create(&module_def);
}
