"""Build a tiny random-weight causal LM once, at `make setup`, so the causal_lm path runs for real.

`python -m inference.build_tiny_llm --out models/tiny-llm [--force]`

It writes a Hugging Face model directory that Triton's `causal_lm` model loads
from `LLMOPS_LLM_PATH` (the default of `llmops up` and of the tests):
- a byte-level BPE tokenizer trained here on a fixed built-in corpus (no
  download), with `<s>`/`</s>` and a small chat template;
- a LlamaForCausalLM config (2 layers, hidden 64) with random weights drawn
  from a fixed seed, as safetensors;
- `tiny_llm.json`, written last: the marker that the build is complete.

The output is gibberish by design: the model exists to prove the serving path
(tokenising, chat templates, streaming, usage counts, sampling) end to end,
not to answer. Any real model directory works the same way through
LLMOPS_LLM_PATH. torch and transformers are imported inside functions: only
this one-off build uses them, never the inference service.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

SEED = 1234
VOCAB_SIZE = 512
MARKER = "tiny_llm.json"
SPECIAL = ("<unk>", "<s>", "</s>")
# Renders system/user/assistant turns; `add_generation_prompt` opens the assistant's turn.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
# A fixed corpus: the tokenizer must come out the same on every machine.
_CORPUS = """\
Answer the question using only the numbered context passages. Cite every passage
you use by its number in square brackets, like [1]. If the passages do not contain
the answer, say that you do not know. Error code E-417 means the coolant flow is low.
Check the pump and the filter, then restart the unit. Oil the chain with wax in winter.
The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs.
system user assistant Context passages Question What does the error mean? How do I fix it?
0 1 2 3 4 5 6 7 8 9 10 100 2024 2025 2026 - + = * / ( ) [ ] { } < > , . ; : ! ? ' "
"""


def _train_tokenizer() -> object:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(SPECIAL),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = _CORPUS.splitlines()
    tokenizer.train_from_iterator(lines * 20, trainer=trainer)
    return tokenizer


def build(out: Path) -> Path:
    """Write the tiny model into `out` (through a temporary sibling folder, renamed into place)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-") as tmp:
        staged = Path(tmp) / "model"
        tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
            tokenizer_object=_train_tokenizer(),
            unk_token="<unk>",
            bos_token="<s>",
            eos_token="</s>",
        )
        tokenizer.chat_template = CHAT_TEMPLATE
        tokenizer.save_pretrained(staged)
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=2048,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            tie_word_embeddings=True,
        )
        torch.manual_seed(SEED)
        model = LlamaForCausalLM(config)
        model.eval()  # type: ignore[no-untyped-call]
        model.save_pretrained(staged, safe_serialization=True)
        (staged / MARKER).write_text(
            json.dumps(
                {
                    "kind": "tiny random-weight causal LM (llmops test model)",
                    "seed": SEED,
                    "vocab_size": len(tokenizer),
                    "parameters": sum(p.numel() for p in model.parameters()),
                },
                indent=2,
            )
            + "\n"
        )
        if out.exists():
            shutil.rmtree(out)
        staged.rename(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=Path("models/tiny-llm"))
    parser.add_argument("--force", action="store_true", help="rebuild even if it is there")
    args = parser.parse_args(argv)
    if (args.out / MARKER).exists() and not args.force:
        print(f"tiny-llm: already built in {args.out}", flush=True)
        return 0
    path = build(args.out)
    print(f"tiny-llm: built in {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
