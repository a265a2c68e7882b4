"""Feature distillation parts: metrics between feature matrices and selectors that map the teacher's width
to the student's (Flex-KD and its controls). Objectives are composed from these (layer map + selector + metric)."""
