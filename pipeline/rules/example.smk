# One held-out clip shown end to end: the clip, its pose overlay and what the exported model
# recognizes in it (part of `all`, so `make all` and `make demo` end with a recognised sign and
# `snakemake --report` shows the overlay).


rule example_clip:
    """Clip tables + pose shards -> the first held-out (val) clip with keypoints: a copy, its pose overlay (PNG), what it shows."""
    input:
        clips=get_shard_files("clips", "clips.parquet"),
        pose=get_shard_paths("pose", ".parquet"),
        code=code_files("example_clip"),
    output:
        clip=data_path("example", "clip.mp4"),
        overlay=report(data_path("example", "overlay.png"), caption="../report/overlay.rst", category="Pose"),
        info=data_path("example", "example.json"),
        text=data_path("example", "example.txt"),
    params:
        **stage_params(config, "example_clip"),
        clips_dir=lambda wildcards, input: shard_root(input.clips[0]),
        pose_dir=lambda wildcards, input: shard_root(input.pose[0]),
        out_dir=lambda wildcards, output: os.path.dirname(output.clip),
    log:
        log_path("example_clip.log"),
    benchmark:
        benchmark_path("example_clip.tsv")
    shell:
        "python -m sldata example-clip --params {PARAMS_FILE:q} --clips-dir {params.clips_dir:q}"
        " --pose-dir {params.pose_dir:q} --out-dir {params.out_dir:q} > {log} 2>&1"


rule predict_example:
    """The exported model (no torch) on the example clip -> its top-5 glosses, as `python -m sltrain predict` prints them."""
    input:
        model=data_path("export", "sign-recognizer"),
        clip=data_path("example", "clip.mp4"),
        code=code_files("predict_example"),
    output:
        prediction=report(data_path("example", "prediction.txt"), caption="../report/prediction.rst",
                          category="Inference"),
    log:
        log_path("predict_example.log"),
    benchmark:
        benchmark_path("predict_example.tsv")
    shell:
        "python -m sltrain predict --model {input.model:q} {input.clip:q} > {output.prediction:q} 2> {log}"
