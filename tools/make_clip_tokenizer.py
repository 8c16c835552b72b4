"""Write the CLIP BPE tokenizer files (vocab.json, merges.txt) that Stable Diffusion's text encoders use.

The vocabulary is OpenAI's 49,408-token byte-level BPE; the open-clip-torch wheel ships it as
bpe_simple_vocab_16e6.txt.gz. Hugging Face's CLIPTokenizer reads it as vocab.json + merges.txt:
the 256 byte symbols, the same with an end-of-word mark, one token per merge, then the two specials.
Run once: python tools/make_clip_tokenizer.py path/to/bpe_simple_vocab_16e6.txt.gz
"""
from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

MERGES = 49152 - 256 - 2
OUT = Path(__file__).resolve().parent.parent / "resources" / "tokenizers" / "clip"


def byte_symbols() -> list[str]:
    """GPT-2's reversible byte-to-printable-character table, in byte order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in sorted(printable)] + [chars[b] for b in range(256) if b not in printable]


def main(source: str) -> None:
    lines = gzip.open(source, "rt", encoding="utf-8").read().split("\n")[1:MERGES + 1]
    merges = [tuple(line.split()) for line in lines]
    symbols = byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False),
                                    encoding="utf-8")
    (OUT / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n",
                                    encoding="utf-8")
    print(f"{len(tokens)} tokens, {len(merges)} merges -> {OUT}")


if __name__ == "__main__":
    main(sys.argv[1])
