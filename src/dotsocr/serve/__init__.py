"""Operations beside the OCR flow: GPUs, launch plans, the vLLM process, readiness, health,
metrics and the model cache. Nothing in the pipeline imports from here."""
