"""Tools around the language: summary, graph, report formats, JSON schemas, the language server,
and import/export of other formats (Keras).
"""
