"""The Lambda layers: the streaming raw archiver and speed layer, the batch layer."""
