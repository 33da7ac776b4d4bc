"""A responder for the local LLM server that answers FiFa-Instruct's prompts the way a
model that follows them would, so the pipeline's checks see realistic prose.

* A concept explanation names the concept the prompt outlines ("The nose shows ...").
* A parent or image aggregation keeps the explanations it was given, in order.
* Anything else (the rating) is the server's default: an instance of the asked schema.

The server's own default answer names no facial region at all, which the rate stage
rightly rejects as `ungrounded`; tests that want that use the default responder.
"""

from __future__ import annotations

import re

from build_tools.fakes.llm_server import LlmCall, default_responder

# From the `concept_explanation` template: "In both images the {concept} is outlined in".
_OUTLINED = re.compile(r"In both images the (.+?) is outlined in")
# The aggregation templates list their parts as "- text" lines.
_PART = re.compile(r"^- (.+)$", re.MULTILINE)
SEAM = "shows a visible blending seam."


def fifa_responder(call: LlmCall) -> dict | str:
    answer = default_responder(call)
    if not (isinstance(answer, dict) and "explanation" in answer):
        return answer
    outlined = _OUTLINED.search(call.text)
    if outlined:
        answer["explanation"] = f"The {outlined.group(1)} {SEAM}"
    else:
        parts = _PART.findall(call.text)
        if parts:
            answer["explanation"] = " ".join(parts)
    return answer
