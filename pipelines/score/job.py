"""Batch scoring (``jobs/embed.py``): clips Parquet or raw videos -> embeddings Parquet (DESIGN §3.2).

    run_embed(checkpoint, output, clips=DIR)        score every complete stream of a clips root
    run_embed(checkpoint, output, videos=[...])     fused decode -> embed, no clips on disk

Resume is per stream (``pipelines.score.plans``); one output root holds one model: a run whose
checkpoint differs from that of a complete stream of the output is refused unless ``overwrite``.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass, replace
from typing import Any

from pipelines.ingest.config import IngestConfig
from pipelines.media.sources import resolve_inputs
from pipelines.media.storage import OutputStore
from pipelines.runtime.cluster import check_capacity, ensure_ray
from pipelines.runtime.shards import damaged_shards
from pipelines.runtime.lock import output_lock
from pipelines.runtime.manifest import STATUS_COMPLETE, StreamManifest
from pipelines.runtime.stream_job import (
    STATUS_SKIPPED,
    StreamJobSummary,
    StreamOutcome,
    remove_empty_staging,
    staging_root,
)
from pipelines.score.config import CONFIG_FILE, EmbedConfig, EmbedError
from pipelines.score.inputs import ClipShape
from pipelines.score.model import ScoringModel
from pipelines.score.pipeline import clip_items, clips_dataset, inspect_videos, score, videos_dataset, window_items
from pipelines.score.plans import StreamPlan, clip_plans, ingest_config_for, model_record, other_models, same_place, video_plans
from pipelines.score.publish import Publisher


@dataclass
class EmbedSummary(StreamJobSummary):
    output: str
    model_id: str
    streams: list[StreamOutcome]
    input_errors: list[str]
    warnings: list[str]
    wall_seconds: float
    scoring_seconds: float = 0.0  # decode + embed + write, without start-up, probing and checks

    def format(self) -> str:
        done = self.of(STATUS_COMPLETE)
        rows = sum(s.rows for s in done)
        clips = rows + sum(s.unscored for s in done)
        rate = clips / self.scoring_seconds if self.scoring_seconds > 0 else 0.0
        lines = [
            f"embed summary -> {self.output} (model {self.model_id})",
            (f"  streams: {len(done)} scored, {len(self.of(STATUS_SKIPPED))} already complete (skipped), "
             f"{len(self.failed)} failed"),
            f"  clips: {rows} scored, {clips - rows} without audio or video (no row)",
            f"  wall time: {self.wall_seconds:.1f} s; scoring {self.scoring_seconds:.1f} s, {rate:.1f} clips/s",
        ]
        lines += self.failure_lines()
        lines.extend(f"  WARNING {warning}" for warning in self.warnings)
        return "\n".join(lines)




def _without_damaged(plans: list[StreamPlan], clips: str, skip: bool, publisher: Publisher,
                     warnings: list[str]) -> list[StreamPlan]:
    """The plans whose clips files all decode (``damaged_shards``). A stream with a damaged file fails with
    the file named (one bad stream never stops the rest), or with ``skip`` is left out with a warning."""
    damaged = damaged_shards([f for p in plans for f in p.files], clips)
    kept = []
    for plan in plans:
        reasons = [damaged[f] for f in plan.files if f in damaged]
        if not reasons:
            kept.append(plan)
        elif skip:
            warnings.extend(f"left out (--skip-bad-shards): {why.split('; ')[0]}" for why in reasons)
        else:
            publisher.fail(plan, reasons)
    return kept


def with_actors_for_cluster(settings: EmbedConfig) -> EmbedConfig:
    """``settings`` with the actor count resolved for the running cluster (``EmbedConfig.actors_for``),
    checked to fit. The decode beside GPU actors runs in tasks of its own and keeps a CPU; CPU actors
    read and decode their inputs themselves (video windows or clips slices) and take every CPU."""
    import ray

    resources = ray.cluster_resources()
    spare = 1.0 if settings.gpus_per_actor > 0 else 0.0
    actors = settings.actors_for(resources.get("CPU", 0.0), resources.get("GPU", 0.0), spare_cpus=spare)
    check_capacity("actors", actors, settings.cpus_per_actor, settings.gpus_per_actor, EmbedError,
                   spare_cpus=spare, spare_for="the decode tasks", hint="lower --actors or --cpus-per-actor")
    return replace(settings, actors=actors)


def run_embed(
    checkpoint: str,
    output: str,
    *,
    clips: str | None = None,
    videos: list[str] | None = None,
    settings: EmbedConfig = EmbedConfig(),
    overwrite: bool = False,
    show_progress: bool = True,
    ray_address: str | None = None,
) -> EmbedSummary:
    """Score a clips root or video files into ``output``.

    ``EmbedError`` (or ``InputError`` for two videos with one stem) for bad input, raised
    before anything is written, and ``OutputInUse`` while another run writes ``output``; a video or
    stream that fails is reported in the summary.
    """
    with ExitStack() as held:  # the output's lock, taken once the inputs are checked
        return _embed(checkpoint, output, clips, videos, settings, overwrite, show_progress, ray_address, held)


def _embed(checkpoint: str, output: str, clips: str | None, videos: list[str] | None, settings: EmbedConfig,
           overwrite: bool, show_progress: bool, ray_address: str | None, held: ExitStack) -> EmbedSummary:
    began = time.perf_counter()
    if (clips is None) == (not videos):
        raise EmbedError("give either a clips directory or video files, not both or neither")
    scoring = ScoringModel.load(checkpoint)
    shape = ClipShape.of_model(scoring.model_config)
    store = OutputStore(output)
    input_errors: list[str] = []
    ingest: IngestConfig | None = None
    damaged: list[str] = []  # --skip-bad-shards: what was left out
    if clips is not None:
        if same_place(clips, output):
            raise EmbedError(f"output {output!r} is the clips directory; choose another --output")
        plans = clip_plans(clips, scoring, damaged if settings.skip_bad_shards else None)
    else:
        ingest = ingest_config_for(scoring, settings)
        resolved = resolve_inputs(list(videos or []))
        plans = video_plans(resolved.sources, scoring, ingest, settings.jpeg_round_trip)
        input_errors = [f"{m.uri}: {m.reason}" for m in resolved.missing]
    others = other_models(store, scoring.model_id)
    if others and not overwrite:
        held = ", ".join(f"{sid} ({model})" for sid, model in sorted(others.items()))
        raise EmbedError(f"output {output!r} holds embeddings of another model: {held}; pass --overwrite to score "
                         f"this run's streams with {scoring.model_id}, or choose another --output")
    run_ids = {p.stream_id for p in plans}
    warnings = [f"left out (--skip-bad-shards): {d}" for d in damaged]
    warnings += [f"stream {sid} of the output still holds model {model} (not part of this run); read_embeddings "
                f"refuses a mix until it is scored again" for sid, model in sorted(others.items()) if sid not in run_ids]

    held.enter_context(output_lock(output, "embed"))
    publisher = Publisher(store)
    scoring_seconds = 0.0
    pending = []
    for plan in plans:
        plan.previous = StreamManifest.load(store, plan.stream_id) if store.exists(store.path()) else None
        previous = plan.previous
        if not overwrite and previous is not None and previous.is_complete_for(plan.config_hash, plan.source, plan.source_key):
            unscored = int((previous.info or {}).get("clips_unscored", 0))
            publisher.outcomes[plan.stream_id] = StreamOutcome(plan.stream_id, plan.source, STATUS_SKIPPED, previous.rows,
                                                               unscored=unscored)
            # A run killed between committing the stream and dropping its staging left that staging behind.
            store.delete_dir(staging_root(store, plan.stream_id))
            continue
        pending.append(plan)

    if pending:
        ensure_ray(ray_address)
        settings = with_actors_for_cluster(settings)
        store.makedirs(store.path())
        if clips is not None:
            pending = _without_damaged(pending, clips, settings.skip_bad_shards, publisher, warnings)
        for plan in pending:
            publisher.start(plan)
        if clips is not None:
            # No more actors than slices (the same reason as the windows below).
            items = clip_items(pending, clips, settings.clips_per_task)
            settings = replace(settings, actors=max(1, min(settings.actors, len(items))))
            dataset = clips_dataset(items, clips, shape, settings)
        else:
            assert ingest is not None
            pending = inspect_videos(pending, publisher, ingest, show_progress)
            windows = window_items(pending, ingest)
            # No more actors than windows: an idle actor still builds its model and decode process, and Ray
            # Data warns that the pool cannot be used.
            settings = replace(settings, actors=max(1, min(settings.actors, len(windows))))
            dataset = videos_dataset(windows, ingest, shape, settings.jpeg_round_trip)
        inputs: dict[str, Any] = {"clips": clips} if clips is not None else {"videos": list(videos or [])}
        store.write_json(store.path(CONFIG_FILE), {**model_record(scoring), "settings": settings.to_dict(),
                                                   "inputs": inputs, "ingest": ingest.to_dict() if ingest else None})
        scoring_began = time.perf_counter()
        score(dataset, pending, scoring, settings, store, publisher, show_progress)
        scoring_seconds = time.perf_counter() - scoring_began
    remove_empty_staging(store)

    outcomes = [publisher.outcomes[k] for k in sorted(publisher.outcomes)]
    return EmbedSummary(output, scoring.model_id, outcomes, input_errors, warnings, time.perf_counter() - began,
                        scoring_seconds)

