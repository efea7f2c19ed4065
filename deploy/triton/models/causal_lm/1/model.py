"""Triton python model `causal_lm`: any local Hugging Face causal LM, streamed token by token.

The model directory is LLMOPS_LLM_PATH, read in `initialize`. Unset or empty,
the model still loads (a failed load would stop Triton at start-up, and with
it the other models) but serves nothing: every request gets an error response
saying that LLMOPS_LLM_PATH is not set. Set to something that is not a model
directory, the load fails (a misconfiguration, reported at start-up). CUDA is
used when torch sees a GPU (in the checkpoint's dtype), else the CPU.

Decoupled: each request gets one response per decoded piece of text in TEXT
(a token's text; a token that ends inside a UTF-8 character waits for the
next), then a final response with INPUT_TOKENS and OUTPUT_TOKENS, counted by
the model's own tokenizer, and the COMPLETE_FINAL flag. A bad request gets a
single error response instead.

The prompt: with ROLES, PROMPT holds the messages' contents and is rendered by
the tokenizer's chat template (with the assistant's turn opened) if it has
one, else as "role: content" lines ending with "assistant:"; without ROLES,
PROMPT is one text used as it is. Decoding is greedy when TEMPERATURE is unset
or 0, else sampling (TOP_P nucleus, SEED for a repeatable draw). Generation
ends at an end-of-sequence token, after MAX_TOKENS, or before a STOP string.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch
import triton_python_backend_utils as pb_utils
from transformers import AutoModelForCausalLM, AutoTokenizer

ENV_VAR = "LLMOPS_LLM_PATH"


class TritonPythonModel:
    """The class name and `initialize`/`execute` are what the python backend calls."""

    def initialize(self, args: dict[str, str]) -> None:
        path = os.environ.get(ENV_VAR, "").strip()
        self.unavailable = ""
        if not path:
            self.unavailable = (
                f"causal_lm serves no model: {ENV_VAR} is not set; set it to a local "
                "Hugging Face model directory (`make setup` builds models/tiny-llm)"
            )
            pb_utils.Logger.log_warn(self.unavailable)
            return
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise pb_utils.TritonModelException(
                f"causal_lm: {ENV_VAR}={path} is not a Hugging Face model directory "
                "(no config.json)"
            )
        config = json.loads(args["model_config"])
        default = config.get("parameters", {}).get("default_max_tokens", {})
        self.default_max_tokens = int(default.get("string_value", "256"))
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        dtype = "auto" if self.device.type == "cuda" else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(self.device)
        self.model.eval()
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self.eos = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
        self.max_positions = int(
            getattr(self.model.config, "max_position_embeddings", 0) or 1 << 30
        )
        pb_utils.Logger.log_info(f"causal_lm: loaded {path} on {self.device}")

    def execute(self, requests: list[pb_utils.InferenceRequest]) -> None:
        """Answer each request on its own response sender; decoupled models return None."""
        for request in requests:
            sender = request.get_response_sender()
            try:
                if self.unavailable:
                    raise ValueError(self.unavailable)
                self._generate(request, sender)
            except ValueError as error:
                response = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(error)))
                sender.send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def _prompt_ids(self, request: pb_utils.InferenceRequest) -> list[int]:
        contents = _strings(request, "PROMPT")
        roles = _strings(request, "ROLES")
        if not contents or not any(c.strip() for c in contents):
            raise ValueError("PROMPT is empty")
        if roles is None:
            return list(self.tokenizer("".join(contents)).input_ids)
        if len(roles) != len(contents):
            raise ValueError(f"ROLES has {len(roles)} entries, PROMPT {len(contents)}")
        messages = [{"role": r, "content": c} for r, c in zip(roles, contents, strict=True)]
        if self.tokenizer.chat_template:
            text = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False
            )
            return list(self.tokenizer(text, add_special_tokens=False).input_ids)
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
        return list(self.tokenizer(text).input_ids)

    @torch.inference_mode()
    def _generate(self, request: pb_utils.InferenceRequest, sender: object) -> None:
        prompt = self._prompt_ids(request)
        max_tokens = _scalar(request, "MAX_TOKENS", self.default_max_tokens)
        temperature = _scalar(request, "TEMPERATURE", 0.0)
        top_p = _scalar(request, "TOP_P", 1.0)
        seed = _scalar(request, "SEED", None)
        stops = [s for s in _strings(request, "STOP") or [] if s]
        if max_tokens < 1:
            raise ValueError(f"MAX_TOKENS must be 1 or more, got {max_tokens}")
        if temperature < 0:
            raise ValueError(f"TEMPERATURE must be 0 or more, got {temperature}")
        if not 0 < top_p <= 1:
            raise ValueError(f"TOP_P must be in (0, 1], got {top_p}")
        if len(prompt) + max_tokens > self.max_positions:
            raise ValueError(
                f"the prompt ({len(prompt)} tokens) plus MAX_TOKENS ({max_tokens}) exceeds "
                f"the model's {self.max_positions} positions"
            )
        generator = None
        if temperature > 0:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(int(seed) if seed is not None else torch.seed())
        generated: list[int] = []
        sent = 0  # characters of the decoded answer already streamed
        text = ""
        past = None
        step = torch.tensor([prompt], device=self.device)
        for _ in range(max_tokens):
            out = self.model(input_ids=step, past_key_values=past, use_cache=True)
            past = out.past_key_values
            token = _pick(out.logits[0, -1], temperature, top_p, generator)
            if token in self.eos:
                break
            generated.append(token)
            step = torch.tensor([[token]], device=self.device)
            text = self.tokenizer.decode(generated, skip_special_tokens=True)
            cut = _first_stop(text, stops)
            if cut is not None:
                text = text[:cut]
                break
            # Hold back an incomplete UTF-8 character and what could begin a STOP string.
            clean = text.rstrip("\ufffd")
            ready = len(clean) - _stop_prefix(clean, stops)
            if ready > sent:
                _send_text(sender, text[sent:ready])
                sent = ready
        if len(text) > sent:
            _send_text(sender, text[sent:])
        counts = [
            pb_utils.Tensor("INPUT_TOKENS", np.array([len(prompt)], dtype=np.int32)),
            pb_utils.Tensor("OUTPUT_TOKENS", np.array([len(generated)], dtype=np.int32)),
        ]
        sender.send(  # type: ignore[attr-defined]
            pb_utils.InferenceResponse(output_tensors=counts),
            flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
        )


def _pick(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None
) -> int:
    """The next token: the most likely one, or a draw from the (nucleus of the) distribution."""
    if generator is None:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1:
        ordered, index = torch.sort(probs, descending=True)
        keep = torch.cumsum(ordered, dim=-1) - ordered < top_p  # always keeps the first
        probs = torch.zeros_like(probs).scatter(0, index[keep], ordered[keep])
    return int(torch.multinomial(probs, 1, generator=generator))


def _first_stop(text: str, stops: list[str]) -> int | None:
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


def _stop_prefix(text: str, stops: list[str]) -> int:
    """How many trailing characters of `text` could be the start of a STOP string."""
    longest = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:n]):
                longest = n
                break
    return longest


def _send_text(sender: object, piece: str) -> None:
    tensor = pb_utils.Tensor("TEXT", np.array([piece.encode()], dtype=np.object_))
    sender.send(pb_utils.InferenceResponse(output_tensors=[tensor]))  # type: ignore[attr-defined]


def _strings(request: pb_utils.InferenceRequest, name: str) -> list[str] | None:
    """A TYPE_STRING input as text (Triton hands over bytes); None when it is not sent."""
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return None
    values = tensor.as_numpy().reshape(-1)
    return [v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v) for v in values]


def _scalar(request: pb_utils.InferenceRequest, name: str, default):  # type: ignore[no-untyped-def]
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return default if tensor is None else tensor.as_numpy().reshape(-1)[0].item()
