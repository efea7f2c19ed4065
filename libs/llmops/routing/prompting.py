"""The conversation a generative target gets: the request's messages, or one built from
its prompt and context."""

from __future__ import annotations

from llmops.v1 import inference_pb2

SYSTEM_PROMPT = (
    "Answer the question using only the numbered context passages. Cite every passage "
    "you use by its number in square brackets, like [1]. If the passages do not contain "
    "the answer, say that you do not know."
)


def conversation(request: inference_pb2.GenerateRequest) -> list[tuple[str, str]]:
    """(role, content) pairs: `messages` as given (the rendered prompt template), else the
    system rule, then one user message with the numbered passages and the question."""
    if request.messages:
        return [(m.role, m.content) for m in request.messages]
    system = SYSTEM_PROMPT
    if request.max_sentences > 0:
        system += f" Answer in at most {request.max_sentences} sentences."
    passages = "\n\n".join(f"[{i}] {p}" for i, p in enumerate(request.context, start=1))
    user = f"Context passages:\n\n{passages}\n\nQuestion: {request.prompt}"
    return [("system", system), ("user", user)]


def question(request: inference_pb2.GenerateRequest) -> str:
    """The question: `prompt`, else the content of the last user message."""
    if request.prompt.strip():
        return request.prompt
    for message in reversed(request.messages):
        if message.role == "user":
            return message.content
    return ""
