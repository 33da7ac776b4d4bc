"""The manipulation category of a pair, from what manifests actually say.

FiFa's four categories (`schemas.fifa.CATEGORIES`) are spelled many ways (`face_editing`,
`Face-Editing`, `FaceSwap`, `FS`), and many manifests name the manipulation method
instead (FaceForensics++'s `Deepfakes`, `Face2Face`, ...).  `category_of` reads both:
case, spaces, hyphens and underscores do not matter; a category the row gives wins over
its method; a value it does not know gives None, which the run counts and reports (the
pair is still processed, without a `cls` sample), never a guess.
"""

from __future__ import annotations

import re

from schemas.fifa import CATEGORIES

FACE_EDITING, FACE_SWAP, REENACTMENT, ENTIRE_SYNTHESIS = CATEGORIES

# Names of the categories (after `_key`: lower case, letters and digits only).
CATEGORY_NAMES: dict[str, str] = {
    **dict.fromkeys(("faceediting", "editing", "fe", "attributeediting", "faceattributeediting",
                     "attributemanipulation"), FACE_EDITING),
    **dict.fromkeys(("faceswap", "swap", "fs", "identityswap", "faceswapping"), FACE_SWAP),
    **dict.fromkeys(("reenactment", "facereenactment", "fr", "expressionswap", "expressiontransfer"),
                    REENACTMENT),
    **dict.fromkeys(("entiresynthesis", "entirefacesynthesis", "efs", "synthesis", "facesynthesis",
                     "fullsynthesis", "wholefacesynthesis", "fullysynthesized", "synthetic"), ENTIRE_SYNTHESIS),
}

# Manipulation methods of the public deepfake datasets and their category.
#   FaceForensics++: Deepfakes, FaceSwap and FaceShifter swap identities; Face2Face and
#   NeuralTextures reenact expressions.  DeepFakeDetection (Google/Jigsaw, shipped with
#   FaceForensics++) swaps identities.  Common generators of the other categories follow.
METHOD_CATEGORIES: dict[str, str] = {
    **dict.fromkeys(("deepfakes", "deepfake", "faceshifter", "deepfakedetection", "dfd", "simswap", "fsgan",
                     "blendface", "infoswap", "hififace", "uniface", "mobilefaceswap", "e4s", "faceswapgan",
                     "dfaker", "dflive", "deepfacelab", "roop", "inswapper"), FACE_SWAP),
    **dict.fromkeys(("face2face", "neuraltextures", "fomm", "firstordermotion", "firstordermotionmodel",
                     "tpsmm", "facevid2vid", "lia", "wav2lip", "talkinghead", "pirenderer", "dagan"), REENACTMENT),
    **dict.fromkeys(("stargan", "starganv2", "attgan", "stgan", "hfgi", "e4e", "styleclip", "interfacegan",
                     "fader", "hisd", "maskgan", "sefa"), FACE_EDITING),
    **dict.fromkeys(("stylegan", "stylegan2", "stylegan3", "pggan", "progan", "stablediffusion", "diffusion",
                     "ddpm", "ddim", "dalle", "dalle2", "dalle3", "midjourney", "glide", "imagen", "latentdiffusion",
                     "ldm", "vqgan", "sdxl"), ENTIRE_SYNTHESIS),
}


def _key(value: str) -> str:
    return re.sub(r"[^a-z0-9]", "", value.lower())


def category_of(category: str | None, method: str | None = None) -> str | None:
    """The FiFa category a row's `category` (first) or `method` names; None when the
    row names none, or names one that is not known (see `CATEGORY_NAMES`, `METHOD_CATEGORIES`)."""
    if category and category.strip():
        key = _key(category)
        return CATEGORY_NAMES.get(key) or METHOD_CATEGORIES.get(key)
    if method and method.strip():
        return METHOD_CATEGORIES.get(_key(method)) or CATEGORY_NAMES.get(_key(method))
    return None
