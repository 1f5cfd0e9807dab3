"""Pretraining (``jobs/pretrain.py``): clips -> EPG encoders with Ray Train (DESIGN §4).

    config      PretrainConfig, model presets, build_pretrain_config (the CLI's rules, for callers in code)
    args        the command line -> PretrainConfig
    data        clips -> Ray Data training samples (JPEG decode, both crops of a clip), input checks
    driver      run_pretrain: checks, the run's config record, TorchTrainer.fit()
    loop        the per-worker loop: resume, one EPG step per batch, checkpoints
    checkpoint  what a checkpoint holds; write_model/load_model, which scoring reads
    metrics     steps.csv, epochs.csv, TensorBoard, the progress line

May import: pipelines.ingest, pipelines.runtime, pipelines.media, epg
"""
