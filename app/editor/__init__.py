"""The application layer between the widgets and core/engine: editor state, history, autosave, the
generation session, the job builder, the model library and stored settings."""
