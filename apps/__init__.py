"""User-facing entry points: the `rewis` CLI and the Gradio demo."""
