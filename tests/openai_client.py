"""Drives the router's OpenAI-compatible API with the official `openai` client.

    python tests/openai_client.py BASE_URL API_KEY MODEL

Exits 0 and prints one JSON line of what it saw when every call behaves; any
failure raises (exit code 1) with the client's own error.
"""
import json
import sys

import openai

base_url, api_key, model = sys.argv[1:4]
client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=120)

messages = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
chat = client.chat.completions.create(model=model, messages=messages, max_tokens=8, temperature=0)
text = chat.choices[0].message.content
assert chat.object == "chat.completion", chat
assert text and text.strip(), chat
assert chat.usage.completion_tokens > 0 and chat.usage.prompt_tokens > 0, chat.usage
assert chat.choices[0].finish_reason in ("stop", "length"), chat.choices[0].finish_reason

pieces = []
for chunk in client.chat.completions.create(model=model, messages=messages, max_tokens=8, temperature=0, stream=True):
    assert chunk.object == "chat.completion.chunk", chunk
    if chunk.choices and chunk.choices[0].delta.content:
        pieces.append(chunk.choices[0].delta.content)
streamed = "".join(pieces)
assert len(pieces) > 1, f"the stream came in one piece: {pieces}"
assert streamed == text, f"greedy stream {streamed!r} differs from the plain answer {text!r}"

completion = client.completions.create(model=model, prompt="The sky is", max_tokens=4, temperature=0)
assert completion.choices[0].text, completion

emb = client.embeddings.create(model=model, input=["The cat sat on the mat.", "A kitten rested on the rug."])
assert len(emb.data) == 2 and len(emb.data[0].embedding) > 0, emb
dims = len(emb.data[0].embedding)

ids = [m.id for m in client.models.list()]
assert model in ids, ids

try:
    client.chat.completions.create(model="no-such-model", messages=messages, max_tokens=4)
    raise AssertionError("an unknown model was served")
except openai.APIStatusError as e:
    assert 400 <= e.status_code < 600, e

print(json.dumps({"chat": text, "streamed_pieces": len(pieces), "embedding_dims": dims, "models": ids}))
