"""Records of the LLM layer: the answers models must give (validated, and passed to the
providers as JSON schemas), the rating of a pair's texts, and usage accounting."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

CRITERIA = ("label_accuracy", "image_consistency", "evidence_consistency", "overall")


class Explanation(BaseModel):
    """A model's explanation of one concept, a parent or the whole image."""

    model_config = ConfigDict(extra="forbid")

    explanation: str = Field(min_length=1, description="the explanation, plain prose")


class Rating(BaseModel):
    """The four criteria of the papers' rating (1-10) and the rater's reason."""

    model_config = ConfigDict(extra="forbid")

    label_accuracy: int = Field(ge=1, le=10, description="the texts agree with the label (a fake, "
                                "altered where the evidence says)")
    image_consistency: int = Field(ge=1, le=10, description="the texts agree with what the images show")
    evidence_consistency: int = Field(ge=1, le=10, description="the texts agree with the measured evidence")
    overall: int = Field(ge=1, le=10, description="overall quality as training data")
    reason: str = Field(description="one or two sentences on the scores")


class FaceDescription(BaseModel):
    """A model's label-assisted description of a face (FaceInstruct)."""

    model_config = ConfigDict(extra="forbid")

    description: str = Field(min_length=1, description="the reasoned description, plain prose")


FACE_CRITERIA = ("label_accuracy", "media_consistency", "label_consistency", "overall")


class FaceRating(BaseModel):
    """FaceInstruct's four rating criteria (1-10), as in Face-LLaVA, and the rater's reason."""

    model_config = ConfigDict(extra="forbid")

    label_accuracy: int = Field(ge=1, le=10, description="accuracy of the manual label: does the face show it")
    media_consistency: int = Field(ge=1, le=10, description="consistency of the description with the image or "
                                   "video")
    label_consistency: int = Field(ge=1, le=10, description="consistency of the description with the label")
    overall: int = Field(ge=1, le=10, description="overall quality of the instruction sample")
    reason: str = Field(description="one or two sentences on the scores")


class Usage(BaseModel):
    """Tokens of one call as the provider counted them (0 when served from the cache)."""

    input_tokens: int = 0
    output_tokens: int = 0

