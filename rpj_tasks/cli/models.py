"""``rpj models install | build | sample``: the CCNet perplexity models (SentencePiece + KenLM, cutoffs)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rpj_tasks.cli.common import key_values, storage_root
from rpj_tasks.core import layout
from rpj_tasks.core.config import ConfigError, load_registry, validate_languages


def register(sub: Any) -> None:
    m = sub.add_parser("models", help="CCNet perplexity models")
    msub = m.add_subparsers(dest="models_cmd", required=True)
    for name in ("install", "build", "sample"):
        s = msub.add_parser(name)
        s.add_argument("--version", required=name != "sample", default="sample-v1" if name == "sample" else None)
        s.add_argument("--storage-root")
        s.add_argument("--languages", default=",".join(layout.LANGUAGES))
        s.add_argument("--force", action="store_true")
        if name == "install":
            s.add_argument("--from", dest="source", required=True, help="URL with {lang}.sp.model and {lang}.arpa.bin")
            s.add_argument("--cutoffs", help="cutoff.csv URL (default: cc_net's)")
        if name == "build":
            s.add_argument("--corpus", action="append", required=True, help="LANG=URL (repeat)")
            s.add_argument("--calibration", action="append", help="LANG=URL of web documents for the cutoffs")
            s.add_argument("--cutoffs", help="cutoff.csv URL when no calibration corpus is given")
            s.add_argument("--vocab-size", type=int, default=65536)
        s.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from rpj_tasks.ccnet import models

    root = storage_root(args)
    langs = validate_languages(args.languages)
    out = layout.models_url(root, args.version)
    if models.exists(out) and not args.force:
        print(f"models already exist at {out} (use --force to rebuild)")
        return
    if args.models_cmd == "install":
        manifest = models.install_models(args.source, langs, out, cutoffs_url=args.cutoffs)
        print(json.dumps(manifest, indent=1, sort_keys=True))
        return
    if args.models_cmd == "sample":
        from rpj_tasks.sample.setup import sample_corpora

        sample = next((c for c in load_registry(args.registry).values() if c.sample), None)
        if sample is None:
            raise ConfigError(f"{args.registry or 'the registry'} has no sample snapshot (an entry with sample: true)")
        corpora, calibration = sample_corpora(sample.with_overrides(storage_root=root, languages=langs))
        vocab, cutoffs = models.SAMPLE_VOCAB_SIZE, None
    else:
        corpora, calibration = key_values(args.corpus), key_values(args.calibration)
        vocab, cutoffs = args.vocab_size, args.cutoffs
    models.begin(out)
    entries = [
        models.build_language(lang, corpora[lang], out, vocab_size=vocab, calibration_url=calibration.get(lang)) for lang in langs
    ]
    manifest = models.finalize_built(out, entries, cutoffs_url=cutoffs)
    print(json.dumps(manifest, indent=1, sort_keys=True))
