"""The browser app (``python app.py``): weights discovery and caching (:mod:`webui.models`) and the request
handlers (:mod:`webui.handlers`), kept free of Gradio so that they are plain, testable functions."""
