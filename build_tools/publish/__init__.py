"""`facext publish`: a finished run as a Hugging Face Hub dataset (export, card, upload)."""
