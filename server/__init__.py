"""The web server: Gradio launched behind the HTTP guard, and the Gradio internals it relies on."""
