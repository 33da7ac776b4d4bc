"""FiFa-Instruct: real/fake pairs -> artifact masks, concepts, explanations, 11 tasks."""
