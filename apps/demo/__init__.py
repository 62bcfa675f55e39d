"""The Gradio web demo (`rewis demo`): Segment, Reconstruct and Scribble tabs; `app.build_demo` builds it."""
