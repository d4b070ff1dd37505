"""The GraphQL schema: queries and mutations over the prediction services, with limits."""

import strawberry
from strawberry.extensions import ParserCache, ValidationCache

from predictions.graphql import resolvers
from predictions.graphql.errors import is_unexpected
from predictions.graphql.limits import AliasLimit, DepthLimit, TokenLimit
from predictions.graphql.types import BatchJob, MLModel, Prediction


@strawberry.type
class Query:
    prediction: Prediction | None = strawberry.field(
        resolver=resolvers.prediction,
        description="One of your stored predictions (scope read); another's id is not found.",
    )
    predictions: list[Prediction] = strawberry.field(
        resolver=resolvers.predictions,
        description=(
            "Your stored predictions, newest first (scope read): at most `limit` (capped at "
            "MAX_PAGE_SIZE), filtered by model name, version label and creation time "
            "(`after` inclusive, `before` exclusive)."
        ),
    )
    batch_job: BatchJob | None = strawberry.field(
        resolver=resolvers.batch_job, description="One of your batch jobs (scope read or batch)."
    )
    batch_jobs: list[BatchJob] = strawberry.field(
        resolver=resolvers.batch_jobs,
        description="Your batch jobs, newest first (scope read or batch).",
    )
    models: list[MLModel] = strawberry.field(
        resolver=resolvers.models, description="Registered models with their versions."
    )
    model: MLModel | None = strawberry.field(
        resolver=resolvers.model, description="One registered model by name."
    )


@strawberry.type
class Mutation:
    predict: Prediction = strawberry.mutation(
        resolver=resolvers.predict,
        description=(
            "One prediction, stored before the answer, as POST /api/v1/predict (scope predict)."
        ),
    )
    predict_batch: BatchJob = strawberry.mutation(
        resolver=resolvers.predict_batch,
        description="Queue rows for prediction in the background (scope batch).",
    )
    cancel_batch_job: BatchJob = strawberry.mutation(
        resolver=resolvers.cancel_batch_job,
        description="Cancel a batch job; a running one stops at its next chunk (scope batch).",
    )


class PlatformSchema(strawberry.Schema):
    """Logs only the errors of the server; a client's mistakes are answered, not logged."""

    def process_errors(self, errors, execution_context=None) -> None:
        super().process_errors([e for e in errors if is_unexpected(e)], execution_context)


schema = PlatformSchema(
    query=Query,
    mutation=Mutation,
    # Per operation: the limits read the settings; both caches are bounded LRU caches shared
    # by every operation of the process.
    extensions=[TokenLimit, ParserCache, ValidationCache, DepthLimit, AliasLimit],
)
