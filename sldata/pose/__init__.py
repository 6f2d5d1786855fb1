"""Pose stage: keypoint layout, extraction with MediaPipe Holistic, shard storage and packing."""
