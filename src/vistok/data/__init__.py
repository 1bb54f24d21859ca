"""Data: decoding (PyAV, pillow), transforms, datasets for joint image+video training, shards,
shipped sample data and synthetic clips.

Layouts: decoders return ``t h w 3`` uint8; datasets and transforms return ``c t h w`` float in
[-1, 1] (an image is a 1-frame clip); batches are ``b c t h w``.
"""

from vistok.data.datasets import (
    ClipDataset,
    MediaEntry,
    MixedBatchSampler,
    check_clip_length,
    collate_clips,
    make_clip,
    media_files,
    rank_and_world,
)
from vistok.data.images import IMAGE_EXTENSIONS, probe_image, read_image, write_image
from vistok.data.samples import heldout_clip, sample_clips, sample_images, training_files
from vistok.data.shards import ShardDataset, assign_shards, shard_paths, write_shards
from vistok.data.synthetic import MovingShapesDataset, moving_shapes, moving_shapes_batch
from vistok.data.transforms import (
    center_crop,
    prepare_clip,
    random_crop,
    resize,
    resize_shorter,
    resize_to_cover,
    to_tensor,
    to_uint8,
)
from vistok.data.video import VIDEO_EXTENSIONS, VideoInfo, probe_video, read_video, write_video

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "ClipDataset",
    "MediaEntry",
    "MixedBatchSampler",
    "MovingShapesDataset",
    "ShardDataset",
    "VideoInfo",
    "assign_shards",
    "center_crop",
    "check_clip_length",
    "collate_clips",
    "heldout_clip",
    "make_clip",
    "media_files",
    "moving_shapes",
    "moving_shapes_batch",
    "prepare_clip",
    "probe_image",
    "probe_video",
    "random_crop",
    "rank_and_world",
    "read_image",
    "read_video",
    "resize",
    "resize_shorter",
    "resize_to_cover",
    "sample_clips",
    "sample_images",
    "shard_paths",
    "to_tensor",
    "to_uint8",
    "training_files",
    "write_image",
    "write_shards",
    "write_video",
]
