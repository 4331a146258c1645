"""The contrastive pretraining suite: encoders, multimodal CLIP model, loss, loader, trainer."""
