"""Qt widgets: thin views bound to app.editor.editor_state.EditorState."""
