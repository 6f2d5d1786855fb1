rule acquire:
    """Subset -> usable clips of one shard (download or local store, crop cleaning, trim, captions)."""
    input:
        samples=data_path("subset", "samples.parquet"),
        store=get_local_store,
    output:
        clips=data_path("clips", "shard-{shard}", "clips.parquet"),
        ledger=data_path("clips", "shard-{shard}", "ledger.parquet"),
        report=data_path("clips", "shard-{shard}", "report.json"),
        videos=directory(data_path("clips", "shard-{shard}", "videos")),
    params:
        shards=SHARDS,
        out_dir=lambda wildcards, output: os.path.dirname(os.path.dirname(output.clips)),
        cache_dir=data_path("cache", "sources"),
        acquire=section_flags(config["acquire"]),
    resources:
        network=1,
    log:
        log_path("acquire/shard-{shard}.log"),
    benchmark:
        benchmark_path("acquire/shard-{shard}.tsv")
    shell:
        "python -m sldata acquire --samples {input.samples:q} --shard {wildcards.shard} --shards {params.shards}"
        " --out-dir {params.out_dir:q} --cache-dir {params.cache_dir:q} --no-progress {params.acquire}"
        " > {log} 2>&1"


rule coverage:
    """All shards' clip tables -> coverage report (metric); fails below acquire.min_success_ratio."""
    input:
        clips=get_shard_files("clips", "clips.parquet"),
    output:
        metrics=data_path("coverage", "coverage.json"),
        report=data_path("coverage", "coverage.txt"),
    params:
        min_success_ratio=config["acquire"]["min_success_ratio"],
    log:
        log_path("coverage.log"),
    shell:
        "python -m sldata coverage --clips {input.clips:q} --min-success-ratio {params.min_success_ratio}"
        " --metrics {output.metrics:q} --report {output.report:q} > {log} 2>&1"
