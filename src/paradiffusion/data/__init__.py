"""The stages' DataModule and image-text sources."""
from paradiffusion.data.collate import ParagraphCollator
from paradiffusion.data.sources import ImageFolder, ManifestDataset, WebDatasetSource, to_tensor
from paradiffusion.data.stages import (
    ImageTextDataModule,
    Stage1PretrainData,
    Stage2AlignmentData,
    Stage3QualityData,
)

__all__ = [
    "ImageFolder",
    "ImageTextDataModule",
    "ManifestDataset",
    "ParagraphCollator",
    "Stage1PretrainData",
    "Stage2AlignmentData",
    "Stage3QualityData",
    "WebDatasetSource",
    "to_tensor",
]
