"""Where a model comes from, one job per module (``synq_hf.hub.loading.load_model`` puts them together).

* :mod:`.ids`: a model id string -> timm registry model, Hub repo or local folder (no network);
* :mod:`.folders`: reading a model folder (``config.json``, what kind of model, are the weights whole);
* :mod:`.download`: Hub downloads with ``revision``/``token``/``cache_dir``/``local_files_only`` and one-line errors;
* :mod:`.preprocessing`: the preprocessing a model expects and its class names, from timm or transformers.
"""
