"""Qt widgets: thin views bound to app.editor_state.EditorState."""
