"""The Gradio app over huvi: `ui.app.build_app` lays it out, `ui.handlers` calls the library."""
