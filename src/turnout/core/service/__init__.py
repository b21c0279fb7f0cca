"""The facades over the rooms: ModelServer, its collaborators, plugins, ModelServingManager."""
