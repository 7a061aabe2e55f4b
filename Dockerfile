# The hub image: `modalhub serve` (API) and `modalhub worker` (processing) from one build.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY backend ./backend
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
COPY --from=build /install /usr/local
RUN useradd --uid 10001 --create-home modalhub
USER 10001
WORKDIR /home/modalhub
ENV PYTHONUNBUFFERED=1 MODALHUB_LOG_FORMAT=json
EXPOSE 8000
ENTRYPOINT ["modalhub"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
