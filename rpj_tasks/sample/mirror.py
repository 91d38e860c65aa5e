"""A deterministic, offline sample Common Crawl mirror (WET files + ``wet.paths.gz``).

Text comes only from installed packages: ``wordfreq`` word-frequency lists (sentences are
Zipfian draws from a language's real vocabulary, made to look like prose) and ``faker`` locale
providers (site names, people, addresses, phone numbers).  Each page gets a quality ``q`` in
[0, 1]: high-``q`` pages are prose over common words, low-``q`` pages draw rare words and mix
in noisy lines (price lists, tables, codes, tag clouds), so perplexity spreads over buckets.

The mirror also holds what the pipeline must cope with: per-site boilerplate lines (menus,
contact lines, copyright lines whose year varies, per-language cookie notices), exact duplicate
pages at other URLs, near-duplicates, short pages (< 300 characters), pages in languages outside
the five RPv2 ones and, with ``broken=True``, four broken records (a corrupt gzip member, a
record missing its ``WARC-Target-URI``, a non-UTF-8 block, a truncated final member).

Everything is derived from the seed: the same arguments give byte-identical files.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
import unicodedata
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np
import wordfreq
from faker import Faker
from faker.providers.lorem.de_DE import Provider as GermanLorem

from rpj_tasks.core import storage
from rpj_tasks.download.wet import block_digest, conversion_record, corrupt_gzip_member, gzip_member, warcinfo_record

SAMPLE_SNAPSHOT = "2000-01"
SAMPLE_CRAWL = "CC-MAIN-2000-01"
MANIFEST_NAME = "sample_manifest.json"

LANG_WEIGHTS = {"en": 0.34, "de": 0.15, "fr": 0.13, "es": 0.13, "it": 0.11, "nl": 0.035, "pt": 0.035, "pl": 0.035, "sv": 0.035}

_CRAWL_START = dt.datetime(2000, 1, 3, tzinfo=dt.UTC)
_CRAWL_SECONDS = 12 * 86400
_VOCAB_SIZE = 30000
_PAGES_PER_SITE = 20
_DUP_POOL = 400
_SHORT_LEN = 300


@dataclass(frozen=True)
class _Locale:
    faker: str
    iso3: str
    tlds: tuple[str, ...]
    menu: tuple[str, ...]
    rights: str
    cookie: str
    currency: str
    letters: frozenset[str] = frozenset()  # single-letter words kept from the frequency list
    elisions: dict[str, str] = field(default_factory=dict)  # token -> full form at sentence end


_LOCALES: dict[str, _Locale] = {
    "en": _Locale(
        "en_US",
        "eng",
        (".com", ".org", ".net", ".co.uk"),
        ("Home", "About us", "News", "Products", "Blog", "Contact", "Login"),
        "All rights reserved.",
        "This website uses cookies to improve your experience.",
        "$",
        frozenset("ai"),
    ),
    "de": _Locale(
        "de_DE",
        "deu",
        (".de", ".at", ".ch"),
        ("Startseite", "Über uns", "Aktuelles", "Produkte", "Kontakt", "Impressum", "Datenschutz"),
        "Alle Rechte vorbehalten.",
        "Diese Website verwendet Cookies, um Ihnen ein besseres Erlebnis zu bieten.",
        "€",
    ),
    "fr": _Locale(
        "fr_FR",
        "fra",
        (".fr", ".be", ".com"),
        ("Accueil", "Qui sommes-nous", "Actualités", "Produits", "Contact", "Mentions légales"),
        "Tous droits réservés.",
        "Ce site utilise des cookies pour améliorer votre expérience.",
        "€",
        frozenset(["a", "à", "y"]),
        {"l": "le", "d": "de", "qu": "que", "j": "je", "n": "ne", "s": "se", "m": "me", "t": "te", "c": "ce"},
    ),
    "es": _Locale(
        "es_ES",
        "spa",
        (".es", ".com", ".com.mx"),
        ("Inicio", "Quiénes somos", "Noticias", "Productos", "Contacto", "Aviso legal"),
        "Todos los derechos reservados.",
        "Este sitio web utiliza cookies para mejorar su experiencia.",
        "€",
        frozenset("yaoeu"),
    ),
    "it": _Locale(
        "it_IT",
        "ita",
        (".it", ".com"),
        ("Home", "Chi siamo", "Notizie", "Prodotti", "Contatti", "Privacy"),
        "Tutti i diritti riservati.",
        "Questo sito utilizza i cookie per migliorare la tua esperienza.",
        "€",
        frozenset(["a", "e", "è", "i", "o"]),
        {"l": "lo", "d": "di", "c": "ci", "dell": "della", "nell": "nella", "all": "alla", "sull": "sulla", "dall": "dalla"},
    ),
    "nl": _Locale(
        "nl_NL",
        "nld",
        (".nl", ".be"),
        ("Home", "Over ons", "Nieuws", "Producten", "Contact"),
        "Alle rechten voorbehouden.",
        "Deze website gebruikt cookies om uw ervaring te verbeteren.",
        "€",
        frozenset("u"),
    ),
    "pt": _Locale(
        "pt_PT",
        "por",
        (".pt", ".com.br"),
        ("Início", "Sobre nós", "Notícias", "Produtos", "Contacto"),
        "Todos os direitos reservados.",
        "Este site utiliza cookies para melhorar a sua experiência.",
        "€",
        frozenset(["a", "o", "e", "é", "à"]),
    ),
    "pl": _Locale(
        "pl_PL",
        "pol",
        (".pl", ".com.pl"),
        ("Strona główna", "O nas", "Aktualności", "Produkty", "Kontakt"),
        "Wszelkie prawa zastrzeżone.",
        "Ta strona używa plików cookie, aby poprawić komfort korzystania.",
        "zł",
        frozenset("wizoau"),
    ),
    "sv": _Locale(
        "sv_SE",
        "swe",
        (".se", ".nu"),
        ("Hem", "Om oss", "Nyheter", "Produkter", "Kontakt"),
        "Alla rättigheter förbehållna.",
        "Den här webbplatsen använder kakor för att förbättra din upplevelse.",
        "kr",
        frozenset(["i", "å", "ö"]),
    ),
}

_GERMAN_NOUN_SUFFIXES = (
    "ung",
    "heit",
    "keit",
    "schaft",
    "tion",
    "tät",
    "ismus",
    "nis",
    "chen",
    "ment",
    "ling",
    "thek",
    "ität",
    "ei",
    "ur",
)
_LETTERS = re.compile(r"^[^\W\d_]+$")


# --------------------------------------------------------------------------- vocabulary


@dataclass(frozen=True)
class _Vocab:
    """A language's words by falling frequency, as display forms, with cumulative weights."""

    display: np.ndarray  # object array of str
    sentence_end: np.ndarray  # display form usable before a full stop (elisions expanded)
    elided: np.ndarray  # bool: token glues to the next word ("l'")
    cum: np.ndarray  # cumulative frequencies

    def draw(self, rng: np.random.Generator, n: int, rare: float) -> np.ndarray:
        """``n`` word indices: Zipfian draws, a fraction ``rare`` of them uniform over the list."""
        u = rng.random(2 * n)
        idx = np.searchsorted(self.cum, u[:n] * self.cum[-1], side="right")
        if rare > 0:
            pick = u[n:] < rare  # then u / rare is uniform on [0, 1)
            idx[pick] = (u[n:][pick] * (len(self.cum) / rare)).astype(np.intp)
        return idx


def _display_form(lang: str, word: str, nouns: frozenset[str]) -> str:
    if lang == "en" and word == "i":
        return "I"
    if lang == "de" and (word in nouns or (len(word) > 5 and word.endswith(_GERMAN_NOUN_SUFFIXES))):
        return word.capitalize()
    return word


@functools.cache
def _vocab(lang: str) -> _Vocab:
    """Letter-only words of ``wordfreq``'s list for ``lang`` (any language wordfreq knows)."""
    loc = _LOCALES.get(lang)
    letters = loc.letters if loc else frozenset()
    elisions = loc.elisions if loc else {}
    nouns = frozenset(w.lower() for w in GermanLorem.word_list if w[:1].isupper()) if lang == "de" else frozenset()
    words: list[str] = []
    freqs: list[float] = []
    for centibels, bucket in enumerate(wordfreq.get_frequency_list(lang)):
        for word in bucket:
            if not _LETTERS.match(word) or (len(word) == 1 and word not in letters and word not in elisions):
                continue
            words.append(word)
            freqs.append(10.0 ** (-centibels / 100))
        if len(words) >= _VOCAB_SIZE:
            break
    display = [f"{w}'" if w in elisions else _display_form(lang, w, nouns) for w in words]
    return _Vocab(
        display=np.array(display, dtype=object),
        sentence_end=np.array([elisions.get(w, d) for w, d in zip(words, display)], dtype=object),
        elided=np.array([w in elisions for w in words]),
        cum=np.cumsum(freqs),
    )


# --------------------------------------------------------------------------- text


_MARKS = np.array(["."] * 18 + ["?", "!"], dtype=object)


def _sentences(rng: np.random.Generator, vocab: _Vocab, sizes: np.ndarray, rare: float) -> list[str]:
    """One prose-like sentence per entry of ``sizes`` (its word count): capitalised, with a
    comma here and there and a final mark.  All words are drawn at once, for speed."""
    ends = np.cumsum(sizes)
    idx = vocab.draw(rng, int(ends[-1]), rare)
    u = rng.random(len(idx))
    words = vocab.display[idx]
    commas = (u < 0.07) & ~vocab.elided[idx]
    commas[ends - 1] = False
    words[commas] = words[commas] + ","
    marks = _MARKS[(u[ends - 1] * len(_MARKS)).astype(np.intp)]
    words[ends - 1] = vocab.sentence_end[idx[ends - 1]] + marks
    flat = words.tolist()
    out = []
    for start, end in zip((ends - sizes).tolist(), ends.tolist()):
        sentence = " ".join(flat[start:end]).replace("' ", "'")
        out.append(sentence[:1].upper() + sentence[1:])
    return out


def _words(rng: np.random.Generator, vocab: _Vocab, n: int, rare: float) -> list[str]:
    return [w.rstrip("'") for w in vocab.display[vocab.draw(rng, n, rare)].tolist()]


def _slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-") or "x"


@dataclass(frozen=True)
class _Site:
    domain: str
    name: str
    menu: str | None
    contact: str | None


@dataclass(frozen=True)
class _LangState:
    """Per-language material: vocabulary, sites and faker pools."""

    lang: str
    vocab: _Vocab
    sites: list[_Site]
    site_cum: np.ndarray  # cumulative site popularity
    people: list[str]
    addresses: list[str]
    phones: list[str]

    @functools.cached_property
    def boilerplate(self) -> frozenset[str]:
        """The lines repeated verbatim across pages: menus, contact lines, the cookie notice."""
        lines = {_LOCALES[self.lang].cookie}
        lines.update(line for s in self.sites for line in (s.menu, s.contact) if line)
        return frozenset(lines)

    def site(self, rng: np.random.Generator) -> _Site:
        return self.sites[int(np.searchsorted(self.site_cum, rng.random() * self.site_cum[-1], side="right"))]


def _lang_state(lang: str, seed: int, n_sites: int, rng: np.random.Generator) -> _LangState:
    loc = _LOCALES[lang]
    fake = Faker(loc.faker)
    fake.seed_instance(seed * 1009 + list(_LOCALES).index(lang))
    sites: list[_Site] = []
    taken: set[str] = set()
    for i in range(n_sites):
        name = fake.company()
        base = _slug(name.split(",")[0])[:24].strip("-")
        tld = loc.tlds[i % len(loc.tlds)]
        domain = f"{base}{tld}" if f"{base}{tld}" not in taken else f"{base}-{i}{tld}"
        taken.add(domain)
        menu_items = [m for m in loc.menu if rng.random() < 0.8] or list(loc.menu[:2])
        menu = " | ".join(menu_items) if rng.random() < 0.75 else None
        contact = f"{name} · {fake.address().replace(chr(10), ', ')} · {fake.phone_number()}" if rng.random() < 0.5 else None
        sites.append(_Site(domain, name, menu, contact))
    popularity = 1.0 / np.arange(1, n_sites + 1) ** 0.8  # a few big sites, many small ones
    return _LangState(
        lang=lang,
        vocab=_vocab(lang),
        sites=sites,
        site_cum=np.cumsum(popularity),
        people=[fake.name() for _ in range(100)],
        addresses=[fake.address().replace("\n", ", ") for _ in range(100)],
        phones=[fake.phone_number() for _ in range(50)],
    )


def _noise_line(rng: np.random.Generator, st: _LangState, words: list[str]) -> str:
    """One low-quality line built around ``words`` (6 of them): a price list, a table row, a
    product code, a tag cloud, shouting, a contact line or a bullet."""
    kind, a, b, c = rng.integers(0, 1 << 20, 4).tolist()
    if kind % 7 == 0:
        price = f"{a % 999 + 1},{b % 100:02d} {_LOCALES[st.lang].currency}"
        return f"{words[0].capitalize()} {words[1]} {words[2]} {price}"
    if kind % 7 == 1:
        date = f"{a % 28 + 1:02d}.{b % 12 + 1:02d}.{1990 + c % 10}"
        return " | ".join([str(c % 10000), f"{a % 1000 / 10:.1f} %", words[0], words[1], date])
    if kind % 7 == 2:
        code = "".join(chr(65 + (a >> (5 * i)) % 26) for i in range(3))
        return f"{code}-{b % 99900 + 100} {words[0].upper()} x{c % 49 + 1} {words[1]}"
    if kind % 7 == 3:
        return "Tags: " + ", ".join(words)
    if kind % 7 == 4:
        return " ".join(w.upper() for w in words[:3]) + "!!!"
    if kind % 7 == 5:
        i = a % len(st.people)
        return f"{st.people[i]} · {st.addresses[i]} · {st.phones[i % len(st.phones)]}"
    return "• " + " ".join([words[0].capitalize(), *words[1:3]])


def _page_text(rng: np.random.Generator, st: _LangState, site: _Site) -> str:
    """A page (title line first) of random quality ``q``: the lower ``q``, the more rare words
    and noisy lines.  About 6 % of pages are short (< 300 characters, no boilerplate)."""
    q, short, author, cookie = rng.random(4).tolist()
    short = short < 0.06
    rare = 0.6 * (1.0 - q) ** 1.5
    n_lines = 1 if short else int(rng.integers(2, 12))
    noisy = (rng.random(n_lines) < 0.7 * (1.0 - q) ** 1.5) & (not short)
    per_line = np.where(noisy, 0, rng.integers(1, 3 if short else 6, n_lines))
    sizes = rng.integers(4, 12 if short else 22, 1 + int(per_line.sum()))
    sizes[0] = 3 + sizes[0] % 5  # the title
    sentences = _sentences(rng, st.vocab, sizes, rare)
    head = f"{sentences[0].rstrip('.?!')} - {site.name}"
    if short:
        return f"{head}\n{' '.join(sentences[1:])[: _SHORT_LEN - 10]}"
    lines = [head] + ([site.menu] if site.menu else [])
    if author < 0.3:
        lines.append(st.people[int(author / 0.3 * len(st.people))])
    noise_words = _words(rng, st.vocab, 6 * int(noisy.sum()), 0.8)
    pos = 1
    for k, count in enumerate(per_line.tolist()):
        if noisy[k]:
            lines.append(_noise_line(rng, st, noise_words[:6]))
            del noise_words[:6]
        else:
            lines.append(" ".join(sentences[pos : pos + count]))
            pos += count
    if site.contact:
        lines.append(site.contact)
    lines.append(f"© {rng.integers(1996, 2001)} {site.name}. {_LOCALES[st.lang].rights}")
    if cookie < 0.3:
        lines.append(_LOCALES[st.lang].cookie)
    return "\n".join(lines)


def _near_duplicate(rng: np.random.Generator, st: _LangState, text: str) -> str:
    """``text`` with a few body words replaced (the title line is kept)."""
    title, _, body = text.partition("\n")
    tokens = body.split(" ")
    for pos in rng.choice(len(tokens), size=min(4, len(tokens)), replace=False):
        tokens[pos] = _words(rng, st.vocab, 1, 0.5)[0]
    return f"{title}\n{' '.join(tokens)}"


def _url(rng: np.random.Generator, site: _Site, text: str, serial: int) -> str:
    host = f"www.{site.domain}" if rng.random() < 0.6 else site.domain
    slug = _slug(text.partition("\n")[0].rsplit(" - ", 1)[0])[:60]
    return f"http{'s' if rng.random() < 0.3 else ''}://{host}/{slug}-{serial}.html"


def _iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- pages


@dataclass(frozen=True)
class _Page:
    lang: str
    url: str
    text: str
    duplicate_of: str | None = None  # URL of the page this one copies
    near: bool = False  # a near (not exact) copy


class _Pages:
    """The stream of good pages: fresh ones, exact duplicates and near-duplicates."""

    def __init__(self, seed: int, total: int, rng: np.random.Generator) -> None:
        self.rng = rng
        self.langs = list(LANG_WEIGHTS)
        self.lang_cum = np.cumsum([LANG_WEIGHTS[lang] for lang in self.langs])
        self.states = {
            lang: _lang_state(lang, seed, max(2, int(total * w / _PAGES_PER_SITE)), rng) for lang, w in LANG_WEIGHTS.items()
        }
        self.serial = 0
        self.recent: dict[str, list[_Page]] = {lang: [] for lang in self.langs}

    def fresh(self, lang: str) -> _Page:
        self.serial += 1
        st = self.states[lang]
        site = st.site(self.rng)
        text = _page_text(self.rng, st, site)
        return _Page(lang, _url(self.rng, site, text, self.serial), text)

    def next(self) -> _Page:
        rng = self.rng
        lang = self.langs[int(np.searchsorted(self.lang_cum, rng.random() * self.lang_cum[-1], side="right"))]
        pool, roll = self.recent[lang], rng.random()
        if pool and roll < 0.08:
            orig = pool[int(rng.integers(0, len(pool)))]
            self.serial += 1
            url = _url(rng, self.states[lang].site(rng), orig.text, self.serial)
            if roll < 0.04:
                return _Page(lang, f"{url}?print=1", orig.text, orig.url)
            return _Page(lang, url, _near_duplicate(rng, self.states[lang], orig.text), orig.url, near=True)
        page = self.fresh(lang)
        pool.append(page)
        del pool[:-_DUP_POOL]
        return page


# --------------------------------------------------------------------------- broken records


def _drop_header(record: bytes, name: str) -> bytes:
    head, sep, rest = record.partition(b"\r\n\r\n")
    prefix = name.lower().encode() + b":"
    lines = [ln for ln in head.split(b"\r\n") if not ln.lower().startswith(prefix)]
    return b"\r\n".join(lines) + sep + rest


def _replace_block(record: bytes, block: bytes) -> bytes:
    """``record`` with another block; Content-Length and WARC-Block-Digest follow it."""
    head = record.partition(b"\r\n\r\n")[0]
    fixed = []
    for line in head.split(b"\r\n"):
        if line.startswith(b"Content-Length:"):
            line = f"Content-Length: {len(block)}".encode()
        elif line.startswith(b"WARC-Block-Digest:"):
            line = f"WARC-Block-Digest: {block_digest(block)}".encode()
        fixed.append(line)
    return b"\r\n".join(fixed) + b"\r\n\r\n" + block + b"\r\n\r\n"


def _broken_plan(n_segments: int, docs: int) -> dict[tuple[int, int], list[str]]:
    """(segment, number of documents before it) -> kinds of broken records to insert there."""
    plan: dict[tuple[int, int], list[str]] = {}
    for key, kind in [
        ((0, docs // 2), "corrupt_gzip"),
        ((1 % n_segments, docs // 3), "missing_header"),
        ((2 % n_segments, 2 * docs // 3), "invalid_utf8"),
        ((n_segments - 1, docs), "truncated_member"),
    ]:
        plan.setdefault(key, []).append(kind)
    return plan


def _broken_member(pages: _Pages, kind: str, date: str) -> tuple[bytes, str]:
    """A gzip member holding a broken record of ``kind``, and the record's URL."""
    lang = "de" if kind == "invalid_utf8" else "en"
    page = pages.fresh(lang)
    record = conversion_record(page.url, date, page.text, language=_LOCALES[lang].iso3)
    if kind == "missing_header":
        return gzip_member(_drop_header(record, "WARC-Target-URI")), page.url
    if kind == "invalid_utf8":
        text = page.text + "\nÖffnungszeiten: Größe und Qualität für Käufer\n"
        return gzip_member(_replace_block(record, text.encode("latin-1", "replace"))), page.url
    member = gzip_member(record)
    if kind == "corrupt_gzip":
        return corrupt_gzip_member(member), page.url
    return member[: len(member) * 3 // 5], page.url


# --------------------------------------------------------------------------- mirror


@dataclass(frozen=True)
class _Segment:
    index: int
    path: str
    start: dt.datetime
    end: dt.datetime

    def date(self, rng: np.random.Generator) -> str:
        span = int((self.end - self.start).total_seconds())
        return _iso(self.start + dt.timedelta(seconds=int(rng.integers(0, span + 1))))

    def warcinfo(self, seed: int) -> bytes:
        info = {
            "Software-Info": "rpj-sample-generator",
            "Extracted-Date": self.end.strftime("%a, %d %b %Y %H:%M:%S GMT"),
            "isPartOf": SAMPLE_CRAWL,
            "operator": "rpj (synthetic data)",
            "description": f"Synthetic offline sample crawl, seed {seed}",
            "publisher": "rpj",
        }
        return gzip_member(warcinfo_record(self.path.rsplit("/", 1)[1], _iso(self.end), info))


def _segments(count: int) -> list[_Segment]:
    """Segments that split the 12-day crawl into equal time windows, named as Common Crawl does."""
    span = _CRAWL_SECONDS / count
    out = []
    for k in range(count):
        start = _CRAWL_START + dt.timedelta(seconds=int(k * span))
        end = _CRAWL_START + dt.timedelta(seconds=int((k + 1) * span) - 1)
        seg_id = f"{int(start.timestamp()) * 1000 + 7 * k}.{k}"
        name = f"CC-MAIN-{start:%Y%m%d%H%M%S}-{end:%Y%m%d%H%M%S}-{k:05d}.warc.wet.gz"
        out.append(_Segment(k, f"crawl-data/{SAMPLE_CRAWL}/segments/{seg_id}/wet/{name}", start, end))
    return out


def generate_mirror(
    out_base: str, *, seed: int = 0, segments: int = 4, docs_per_segment: int = 250, broken: bool = True
) -> dict[str, Any]:
    """Write a sample mirror of crawl ``CC-MAIN-2000-01`` under ``out_base``; return its manifest.

    Each WET file gets ``docs_per_segment`` good documents; broken records come on top.  The
    manifest is also written to ``crawl-data/CC-MAIN-2000-01/sample_manifest.json``.
    """
    if segments < 1 or docs_per_segment < 1:
        raise ValueError("segments and docs_per_segment must be >= 1")
    rng = np.random.default_rng(seed)
    pages = _Pages(seed, segments * docs_per_segment, rng)
    plan = _broken_plan(segments, docs_per_segment) if broken else {}
    manifest: dict[str, Any] = {
        "crawl": SAMPLE_CRAWL,
        "snapshot": SAMPLE_SNAPSHOT,
        "seed": seed,
        "segments": segments,
        "docs_per_segment": docs_per_segment,
        "broken": broken,
        "documents": 0,
        "languages": {},
        "short_documents": 0,
        "exact_duplicates": [],
        "near_duplicates": [],
        "broken_records": [],
        "files": {},
        "boilerplate_lines": {},
    }
    segs = _segments(segments)
    for seg in segs:
        with storage.atomic_write(storage.join(out_base, seg.path)) as f:
            members, nbytes = _write_segment(f, seg, pages, plan, docs_per_segment, seed, manifest)
        manifest["files"][seg.path] = {"members": members, "bytes": nbytes, "documents": docs_per_segment}
    crawl_dir = storage.join(out_base, "crawl-data", SAMPLE_CRAWL)
    with storage.atomic_gzip_write(storage.join(crawl_dir, "wet.paths.gz")) as f:
        f.write("".join(f"{seg.path}\n" for seg in segs).encode())
    manifest["paths"] = [seg.path for seg in segs]
    manifest["boilerplate_lines"] = {k: v for k, v in manifest["boilerplate_lines"].items() if v > 1}
    storage.write_bytes(
        storage.join(crawl_dir, MANIFEST_NAME), json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False).encode()
    )
    return manifest


def _write_segment(
    f: IO[bytes],
    seg: _Segment,
    pages: _Pages,
    plan: dict[tuple[int, int], list[str]],
    docs: int,
    seed: int,
    manifest: dict[str, Any],
) -> tuple[int, int]:
    """Stream one WET file: the warcinfo record, ``docs`` good documents and the broken records
    planned for it.  Returns (gzip members, bytes)."""
    members = offset = 0

    def put(member: bytes) -> None:
        nonlocal members, offset
        f.write(member)
        members, offset = members + 1, offset + len(member)

    put(seg.warcinfo(seed))
    for pos in range(docs + 1):
        for kind in plan.get((seg.index, pos), []):
            member, url = _broken_member(pages, kind, seg.date(pages.rng))
            manifest["broken_records"].append({"path": seg.path, "kind": kind, "url": url, "member": members, "offset": offset})
            put(member)
        if pos < docs:
            page = pages.next()
            put(gzip_member(conversion_record(page.url, seg.date(pages.rng), page.text, language=_LOCALES[page.lang].iso3)))
            _account(manifest, page, pages.states[page.lang])
    return members, offset


def _account(manifest: dict[str, Any], page: _Page, st: _LangState) -> None:
    """Count one good document in the manifest."""
    manifest["documents"] += 1
    manifest["languages"][page.lang] = manifest["languages"].get(page.lang, 0) + 1
    body = page.text.partition("\n")[2]
    if len(body) < _SHORT_LEN:
        manifest["short_documents"] += 1
    if page.duplicate_of:
        manifest["near_duplicates" if page.near else "exact_duplicates"].append([page.url, page.duplicate_of])
    lines = manifest["boilerplate_lines"]
    for line in set(body.split("\n")) & st.boilerplate:
        lines[line] = lines.get(line, 0) + 1


# --------------------------------------------------------------------------- reference corpus


def generate_reference_corpus(out_base: str, langs: Any, *, seed: int, docs_per_lang: int) -> dict[str, str]:
    """Write ``{out_base}/{lang}.txt`` per language: clean prose, one document per line.

    This stands in for the Wikipedia opening texts CCNet trains its SentencePiece and KenLM
    models on; it uses the same vocabulary as the mirror's high-quality pages.  Any language
    that ``wordfreq`` knows works.  Returns ``{lang: url}``.
    """
    urls: dict[str, str] = {}
    for lang in sorted(set(langs)):
        rng = np.random.default_rng([seed, *lang.encode()])
        vocab = _vocab(lang)
        url = storage.join(out_base, f"{lang}.txt")
        with storage.atomic_write(url, "w") as f:
            for _ in range(docs_per_lang):
                sizes = rng.integers(5, 22, int(rng.integers(2, 8)))
                f.write(" ".join(_sentences(rng, vocab, sizes, 0.0)) + "\n")
        urls[lang] = url
    return urls
