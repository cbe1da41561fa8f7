def flatten(params): raise NotImplementedError
