"""Read what a data engineer sees in the Dagster UI, through the UI's own GraphQL API."""

from __future__ import annotations

from typing import Any

import httpx


class DagsterGraphQL:
    def __init__(self, base_url: str) -> None:
        self.url = f"{base_url}/graphql"

    def query(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = httpx.post(self.url, json={"query": query, "variables": variables or {}}, timeout=60)
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise AssertionError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def runs(self, limit: int = 500) -> list[dict[str, Any]]:
        data = self.query(
            """query Runs($limit: Int) { runsOrError(limit: $limit) { ... on Runs { results {
                 runId status jobName tags { key value } } } } }""", {"limit": limit})
        runs = data["runsOrError"]["results"]
        for run in runs:
            run["tags"] = {tag["key"]: tag["value"] for tag in run["tags"]}
        return runs

    def materialized_partitions(self, asset_path: list[str]) -> set[str]:
        data = self.query(
            """query Mats($path: [String!]!) { assetOrError(assetKey: {path: $path}) {
                 ... on Asset { assetMaterializations(limit: 1000) { partition runId } } } }""",
            {"path": asset_path})
        return {m["partition"] for m in data["assetOrError"]["assetMaterializations"]}

    def check_executions(self, asset_path: list[str], check_name: str) -> list[dict[str, Any]]:
        data = self.query(
            """query Checks($path: [String!]!, $name: String!) {
                 assetCheckExecutions(assetKey: {path: $path}, checkName: $name, limit: 1000) {
                   runId status evaluation { success severity } } }""",
            {"path": asset_path, "name": check_name})
        return data["assetCheckExecutions"]
